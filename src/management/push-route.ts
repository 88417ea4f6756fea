/**
 * GET /v1/management/push: a handset's push stream (server-sent events), authenticated with its
 * push authentication key — docs/protocols/management.md §Push channel. The handler authenticates,
 * opens the stream in this node's hub (ready event first, then a catch-up notification when the
 * handset is behind) and hands the stream to Fastify, which ends it when the client goes away.
 */
import { Type } from "typebox";
import type { App } from "../platform/http/app.ts";
import { signedViewOf } from "./device-signature.ts";
import { LAST_EVENT_ID, notificationEvent, PUSH_CONTENT_TYPE, PUSH_PATH } from "./push-protocol.ts";
import type { ManagementService } from "./server.ts";

export function registerPushRoute(app: App, service: ManagementService): void {
  app.get(
    PUSH_PATH,
    {
      schema: {
        tags: ["management"],
        summary:
          "The handset's push stream (text/event-stream): dynamic-key notifications as they are issued. " +
          "Signed with the push authentication key (keyid push:<deviceId>, tag handsafe/v1/management/push); " +
          "refusals answer 401 with a signature.* code",
        headers: Type.Object({
          "last-event-id": Type.Optional(Type.String({ pattern: LAST_EVENT_ID.source })),
        }),
      },
    },
    async (request, reply) => {
      const { deviceId } = await service.acceptPushSubscription(request.headers, signedViewOf(request));
      const lastCounter = Number(request.headers["last-event-id"] ?? 0);
      const connection = service.push.open(deviceId);
      // However the response ends (client gone, server closing), the stream leaves the hub.
      reply.raw.once("close", () => connection.stream.destroy());
      if (reply.raw.destroyed || request.raw.socket.destroyed) connection.stream.destroy();
      await service.push.ready(connection);
      try {
        const behind = await service.pushCatchUp(deviceId, lastCounter);
        if (behind) connection.write(notificationEvent(behind));
      } catch (err) {
        // The stream still serves new notifications; the handset asks again when it reconnects.
        request.log.warn({ err }, "push catch-up failed");
      }
      void reply
        .header("content-type", `${PUSH_CONTENT_TYPE}; charset=utf-8`)
        .header("cache-control", "no-store")
        // nginx and similar proxies buffer responses unless told not to.
        .header("x-accel-buffering", "no");
      return reply.send(connection.stream);
    },
  );

  // Open streams would hold app.close() forever: end them first, then stop the relay.
  app.addHook("preClose", async () => service.push.endStreams());
  app.addHook("onClose", async () => service.push.close());
}
