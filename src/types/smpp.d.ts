/**
 * The part of smpp 0.5.1 (farhadi/node-smpp, CommonJS, no types of its own) that handsafe uses:
 * a client session, the server (our test SMSC), PDUs and the status codes.
 */
declare module "smpp" {
  import type { EventEmitter } from "node:events";
  import type { Server as NetServer, Socket } from "node:net";

  /** A decoded PDU: header fields plus the command's parameters and TLVs by name. */
  export interface PDU {
    command: string;
    command_id: number;
    command_status: number;
    sequence_number: number;
    // biome-ignore lint/suspicious/noExplicitAny: parameters differ per command (SMPP 3.4 §4).
    [parameter: string]: any;
    isResponse(): boolean;
    response(options?: Record<string, unknown>): PDU;
  }

  /** short_message / message_payload after the library's decode filter. */
  export interface DecodedMessage {
    message: string | Buffer;
    udh?: Buffer[];
  }

  type ResponseCallback = (pdu: PDU) => void;
  type Shortcut = (
    options?: Record<string, unknown>,
    onResponse?: ResponseCallback,
    onSent?: ResponseCallback,
  ) => boolean;

  export class Session extends EventEmitter {
    readonly socket: Socket;
    send(pdu: PDU, onResponse?: ResponseCallback, onSent?: ResponseCallback): boolean;
    bind_transceiver: Shortcut;
    submit_sm: Shortcut;
    deliver_sm: Shortcut;
    enquire_link: Shortcut;
    unbind: Shortcut;
    pause(): void;
    resume(): void;
    close(callback?: () => void): void;
    destroy(callback?: () => void): void;
  }

  export interface Server extends NetServer {
    readonly sessions: Session[];
  }

  export interface ConnectOptions {
    url?: string;
    host?: string;
    port?: number;
    /** Sends enquire_link every so many milliseconds (we run our own timer instead). */
    auto_enquire_link_period?: number;
  }

  interface Smpp {
    connect(options: ConnectOptions, onConnect?: () => void): Session;
    createServer(options: Record<string, unknown>, onSession?: (session: Session) => void): Server;
    /** SMPP 3.4 §5.1.3 command_status values by name (ESME_ROK, ESME_RINVPASWD, …). */
    readonly errors: Readonly<Record<string, number>>;
  }

  const smpp: Smpp;
  export default smpp;
}
