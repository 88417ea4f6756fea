/** What the browser bundle test builds: the messaging SDK as a browser would load it. */
export { backend as cryptoBackend } from "#crypto-backend";
export { createHttpClient } from "../../src/handset/http-client.ts";
export { MemoryKeystore } from "../../src/handset/keystore.ts";
export { MessagingApp } from "../../src/messaging/handset.ts";
export { OutboxLine } from "../../src/handset/outbox-line.ts";
export { SimulatedMessagingHandset } from "../../src/messaging/simulator.ts";
