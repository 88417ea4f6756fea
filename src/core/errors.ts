/**
 * One error type for the whole project. `code` is stable ("activation.secret_expired") and is what
 * tests, the API and the docs speak of; `message` is for people and may change; `status` is the HTTP
 * status the API answers with when the error reaches a route.
 */
export class HandsafeError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: string,
    message: string,
    options: { status?: number; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HandsafeError";
    this.code = code;
    this.status = options.status ?? 400;
    this.details = options.details;
  }

  /** The wire shape: `{"error":{"code","message"}}` — never a stack, never a cause. */
  toJSON(): { error: { code: string; message: string; details?: Record<string, unknown> } } {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.details ? { details: this.details } : {}),
      },
    };
  }
}

export function isHandsafeError(e: unknown, code?: string): e is HandsafeError {
  return e instanceof HandsafeError && (code === undefined || e.code === code);
}

/** Throws `HandsafeError(code)` unless `condition` holds. For checks at a boundary. */
export function ensure(condition: unknown, code: string, message: string, status = 400): asserts condition {
  if (!condition) throw new HandsafeError(code, message, { status });
}
