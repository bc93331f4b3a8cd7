/**
 * A small typed event emitter with no dependency on Node's 'events' (the SDK runs in browsers).
 * Listener exceptions never reach the emitter's caller: they go to the `onListenerError` hook.
 */

/** An event map: event name → the listener's argument tuple. */
export type EventMap = Record<string, unknown[]>;

/** A listener of event `K` of map `E`. */
export type Listener<E extends EventMap, K extends keyof E> = (...args: E[K]) => void;

/** A typed emitter. `on`/`once`/`off` are public; `emit` is for the owner. */
export class TypedEmitter<E extends EventMap> {
  readonly #listeners = new Map<keyof E, Set<unknown>>();
  readonly #onListenerError: (err: unknown, event: keyof E) => void;

  /** @param onListenerError called when a listener throws (default: rethrow asynchronously) */
  constructor(onListenerError?: (err: unknown, event: keyof E) => void) {
    this.#onListenerError =
      onListenerError ??
      ((err) => {
        queueMicrotask(() => {
          throw err;
        });
      });
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, listener: Listener<E, K>): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);

    return () => this.off(event, listener);
  }

  /** Adds a listener that runs once; returns a function that removes it. */
  once<K extends keyof E>(event: K, listener: Listener<E, K>): () => void {
    const off = this.on(event, (...args: E[K]) => {
      off();
      listener(...args);
    });

    return off;
  }

  /** Removes a listener added with `on` (a `once` listener is removed by the function it returned). */
  off<K extends keyof E>(event: K, listener: Listener<E, K>): void {
    this.#listeners.get(event)?.delete(listener);
  }

  /** Number of listeners of an event. */
  listenerCount(event: keyof E): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Removes every listener (of one event, or of all). */
  removeAllListeners(event?: keyof E): void {
    if (event === undefined) {
      this.#listeners.clear();
    } else {
      this.#listeners.delete(event);
    }
  }

  /** Calls the listeners of `event` in order; a throwing listener does not stop the others. */
  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) {
      return;
    }
    for (const listener of [...set]) {
      try {
        (listener as Listener<E, K>)(...args);
      } catch (err) {
        this.#onListenerError(err, event);
      }
    }
  }
}
