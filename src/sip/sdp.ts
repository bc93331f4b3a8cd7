/**
 * SDP for the trunk leg: parsing (RFC 4566, read with sdp-transform and checked), offer/answer
 * (RFC 3264) with one audio stream, one codec of src/media/codecs.ts plus telephone-event (RFC
 * 4733), never transcoded, and the resulting media plan as mediasoup parameters. Pure code: no
 * sockets, no timers, no logging; every error from SDP text is an {@link SdpError}.
 *
 * | call | when |
 * |---|---|
 * | `negotiateAnswer(offer, opts)` | a trunk's INVITE with SDP: our answer and the plan |
 * | `buildOffer(opts)` | our INVITE (`session`) or re-INVITE (`previous`: hold, resume, new relay address) |
 * | `negotiateFromAnswer(ourOffer, answer)` | the trunk's 183/200 to our offer: the plan |
 * | `reanswer(plan, reoffer, opts)` | a trunk's re-INVITE: our answer, the new plan and what changed |
 * | `toProducerRtpParameters(plan)`, `toRtpCapabilities(plan)`, `consumerPayloadTypeMap(plan, params)` | mediasoup on the trunk's PlainTransport |
 *
 * The pieces live in `./sdp/`; everything public is re-exported here.
 */
export { CODEC_INFO, isTrunkCodecName, mimeTypeOf, STATIC_PAYLOAD_TYPES, TELEPHONE_EVENT, type CodecInfo } from './sdp/codecs.js';
export { SdpError, type SdpErrorCode } from './sdp/errors.js';
export {
  consumerPayloadTypeMap,
  toProducerRtpParameters,
  toRtpCapabilities,
  toRtpCodecParameters,
  type ProducerRtpOptions,
} from './sdp/mediasoup.js';
export {
  buildOffer,
  fmtpParameters,
  negotiateAnswer,
  negotiateFromAnswer,
  reanswer,
  reofferFormats,
  type AnswerResult,
  type BuildOfferOptions,
  type Either,
  type HoldKind,
  type LocalAddress,
  type MediaPlan,
  type NegotiateAnswerOptions,
  type OfferCodec,
  type OfferResult,
  type PlanChanges,
  type PlanCodec,
  type PlanRemote,
  type PlanSrtp,
  type PlanTelephoneEvent,
  type ReanswerOptions,
  type ReanswerResult,
  type SrtpAnswerer,
  type TelephoneEventFormat,
} from './sdp/negotiate.js';
export {
  MAX_SDP_LENGTH,
  parseSdp,
  type SdpConnection,
  type SdpCrypto,
  type SdpDirection,
  type SdpMedia,
  type SdpOrigin,
  type SdpRtpFormat,
  type SdpSession,
} from './sdp/parse.js';
export { newSdpSessionIds, SDP_SESSION_NAME, SDP_USERNAME, type SdpSessionIds } from './sdp/write.js';
