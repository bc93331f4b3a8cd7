/**
 * RFC 3261 §17 timer values (Table 4 of §A), derived from T1, T2 and T4, plus RFC 6026's Timer L
 * and M. All values in milliseconds. Timers that only guard retransmissions over unreliable
 * transports are zero over TCP/TLS.
 */

/** The three base values; RFC 3261 defaults are 500, 4000 and 5000 ms. */
export interface TimerBase {
  t1: number;
  t2: number;
  t4: number;
}

/** Default bases from RFC 3261 §A. */
export const DEFAULT_TIMER_BASE: TimerBase = { t1: 500, t2: 4000, t4: 5000 };

/** Derived timers for one transport (reliable or not). */
export interface TransactionTimers {
  /** INVITE client retransmit, initial interval (doubles, uncapped); 0 when reliable. */
  A: number;
  /** INVITE client transaction timeout (64·T1). */
  B: number;
  /** Wait time for response retransmits in the INVITE client Completed state: ≥ 32 s unreliable, 0 reliable. */
  D: number;
  /** Non-INVITE client retransmit, initial interval (doubles up to T2); 0 when reliable. */
  E: number;
  /** Non-INVITE client transaction timeout (64·T1). */
  F: number;
  /** INVITE server final-response retransmit, initial interval (doubles up to T2); 0 when reliable. */
  G: number;
  /** Wait time for the ACK of a non-2xx final response (64·T1). */
  H: number;
  /** Wait time for ACK retransmits in the INVITE server Confirmed state: T4 unreliable, 0 reliable. */
  I: number;
  /** Wait time for request retransmits in the non-INVITE server Completed state: 64·T1 unreliable, 0 reliable. */
  J: number;
  /** Wait time for response retransmits in the non-INVITE client Completed state: T4 unreliable, 0 reliable. */
  K: number;
  /** RFC 6026: INVITE server Accepted state lifetime (64·T1). */
  L: number;
  /** RFC 6026: INVITE client Accepted state lifetime (64·T1). */
  M: number;
  /** T2, the cap of the doubling intervals. */
  T2: number;
}

/** Timers for a transport. */
export function timersFor(base: TimerBase, reliable: boolean): TransactionTimers {
  const { t1, t2, t4 } = base;

  return {
    A: reliable ? 0 : t1,
    B: 64 * t1,
    D: reliable ? 0 : Math.max(32_000, 64 * t1),
    E: reliable ? 0 : t1,
    F: 64 * t1,
    G: reliable ? 0 : t1,
    H: 64 * t1,
    I: reliable ? 0 : t4,
    J: reliable ? 0 : 64 * t1,
    K: reliable ? 0 : t4,
    L: 64 * t1,
    M: 64 * t1,
    T2: t2,
  };
}
