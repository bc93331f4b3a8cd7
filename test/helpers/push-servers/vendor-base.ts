/** Bookkeeping shared by the vendor fakes: scripted token states, accepted pushes, problems. */
import { type FakeServer, type Handler, IssuedTokens, type RecordedRequest, startFakeServer } from './common.js';

/** Scripted behaviour of a device token at a vendor fake (each fake documents which it knows). */
export type VendorTokenState = 'ok' | 'dead' | 'dead-alt' | 'fail' | 'busy' | 'down' | 'hang';

/** Base of the vendor fakes. */
export abstract class VendorFake<Accepted> {
  readonly states = new Map<string, VendorTokenState>();
  readonly accepted: Accepted[] = [];
  /** Validation failures the fake answered with an error (a test expecting success then fails). */
  readonly problems: string[] = [];
  readonly issued = new IssuedTokens();
  /** Lifetime of issued auth tokens, s. */
  tokenLifetimeS = 3600;
  protected server!: FakeServer;

  protected async listen(handler: Handler): Promise<void> {
    this.server = await startFakeServer(handler);
  }

  get url(): string {
    return this.server.url;
  }

  get requests(): RecordedRequest[] {
    return this.server.requests;
  }

  /** Requests whose path starts with `prefix`. */
  count(prefix: string): number {
    return this.server.requests.filter((r) => r.path.startsWith(prefix)).length;
  }

  close(): Promise<void> {
    return this.server.close();
  }

  protected problem(what: string): string {
    this.problems.push(what);

    return what;
  }

  protected state(token: string): VendorTokenState {
    return this.states.get(token) ?? 'ok';
  }
}

/** JSON.parse or undefined. */
export function json(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
