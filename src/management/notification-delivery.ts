/**
 * How a sealed dynamic-key notification reaches its device: over the device's push stream when one
 * is open (push-channel.ts), otherwise in one SMS to its number.
 */
import { randomToken } from "../core/crypto/random.ts";
import { HandsafeError } from "../core/errors.ts";
import type { Platform } from "../platform/context.ts";
import type { SmsGateway } from "../platform/notify/sms/types.ts";
import type { PushChannel } from "./push-channel.ts";
import type { PushNotification } from "./push-protocol.ts";
import type * as store from "./store.ts";

/** How a notification reached the device. */
export type NotificationChannel = "sms" | "push";

export interface NotificationSent {
  channel: NotificationChannel;
  messageId: string;
  gateway: string;
  node?: string;
}

export class NotificationDelivery {
  constructor(
    private readonly platform: Platform,
    private readonly push: PushChannel,
    private readonly sms: SmsGateway,
    private readonly onPushError: ((what: string, err: unknown) => void) | undefined,
  ) {}

  /**
   * Push first (no cost, no SMS limit, works without a number), SMS otherwise. A failure is audited
   * as management.notification_sent (error) and answered management.notification_failed.
   */
  async send(
    device: store.DeviceRow,
    notification: PushNotification,
    actor: string,
    details: Record<string, unknown>,
  ): Promise<NotificationSent> {
    const failed = async (code: string, message: string, cause?: unknown): Promise<never> => {
      await this.platform.audit({
        actor,
        action: "management.notification_sent",
        subject: `device:${device.id}`,
        outcome: "error",
        details: { ...details, code },
      });
      throw new HandsafeError("management.notification_failed", message, {
        status: 502,
        ...(cause === undefined ? {} : { cause }),
      });
    };
    let node: string | undefined;
    try {
      node = await this.push.deliver(device.id, notification);
    } catch (e) {
      // The relay could not be asked (database trouble): the SMS path may still work.
      this.onPushError?.("deliver", e);
    }
    if (node !== undefined)
      return { channel: "push", messageId: `push_${randomToken(12)}`, gateway: "push", node };
    if (!device.msisdn)
      return failed(
        "management.push_closed",
        "the push stream closed before the notification was written; the key is sent when the device reconnects",
      );
    try {
      const { id } = await this.sms.send(device.msisdn, notification.text);
      return { channel: "sms", messageId: id, gateway: this.sms.kind };
    } catch (e) {
      return failed(
        e instanceof HandsafeError ? e.code : "sms.failed",
        "the SMS gateway did not accept the notification",
        e,
      );
    }
  }
}
