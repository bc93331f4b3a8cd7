/* Placeholder archive: mediasoup only links it into the optional static libmediasoup-worker, which ringbridge never builds. */
int ringbridge_stub_openssl(void) { return 0; }
