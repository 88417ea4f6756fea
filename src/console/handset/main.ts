/**
 * The virtual handset at /handset: the secure-messaging app (messaging/handset.ts) running in the
 * browser on the web crypto backend, against the server the page came from. It registers a number
 * by either variant, keeps its key pair in memory (a reload is a factory reset: the next
 * registration replaces the key and waiting messages are sealed to the new one), pulls and opens
 * the inbox, marks messages read, replies and deletes.
 *
 * It also activates services (activation/handset.ts): the user signs in, the service's signed grant
 * is checked against its pinned key and CPace (with @noble's Elligator 2 map) agrees a per-service
 * key with the server, all in the page.
 *
 * A real handset has a modem; this one may borrow the built-in SMS centre's (the outbox gateway)
 * with the operator's admin token — the "simulated SIM" — to see the texts to its number and to
 * send its own code by SMS. Without it, the user types the code from wherever the text arrived.
 */
import { HandsafeError } from "../../core/errors.ts";
import { activate, listActivated, login } from "../../activation/handset.ts";
import { Handset } from "../../handset/handset.ts";
import { createHttpClient } from "../../handset/http-client.ts";
import { MemoryKeystore } from "../../handset/keystore.ts";
import { OutboxLine, type Text } from "../../handset/outbox-line.ts";
import { MessagingApp, type OpenedMessage } from "../../messaging/handset.ts";
import { adminApi, origin } from "../shared/api.ts";
import { errorLine, formValues, h, show, when } from "../shared/dom.ts";

const SIM_TOKEN_KEY = "handsafe.simToken";
/** The push stream wakes the inbox; this refresh is only the fallback when the stream is down. */
const INBOX_REFRESH_MS = 30_000;
const SIM_REFRESH_MS = 1500;

const main = document.getElementById("main")!;
const http = createHttpClient({ baseUrl: origin() });
// One keystore for the whole handset: the messaging app's entries and the activation ones.
const keystore = new MemoryKeystore();
const app = await MessagingApp.open({ http, keystore });

const status = h("div", { "aria-live": "polite" });
const screen = h("div");
const simPanel = h("section", { class: "card" });
const servicesPanel = h("section", { class: "card" });
show(main, status, screen, simPanel, servicesPanel);

let inboxTimer: ReturnType<typeof setInterval> | undefined;
let pushed: { close(): Promise<void> } | undefined;
let sim: { line: OutboxLine; texts: Text[]; timer: ReturnType<typeof setInterval> } | undefined;

const say = (...children: Array<Node | string>) => show(status, ...children);
const fail = (e: unknown) => show(status, errorLine(e));

async function attempt(work: () => Promise<void>): Promise<void> {
  say();
  try {
    await work();
  } catch (e) {
    fail(e);
  }
}

// --- registration --------------------------------------------------------------------------------

function registrationScreen(): void {
  stopInbox();
  const form = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        const { number, deviceType, variant } = formValues(form);
        void attempt(() =>
          variant === "handset"
            ? registerByHandsetCode(number!, deviceType!)
            : registerByServerCode(number!, deviceType!),
        );
      },
    },
    h(
      "label",
      {},
      "Phone number",
      h("input", { name: "number", type: "tel", required: true, placeholder: "+447911123456" }),
    ),
    h(
      "label",
      {},
      "Device",
      h(
        "select",
        { name: "deviceType" },
        h("option", { value: "phone" }, "phone"),
        h("option", { value: "tablet" }, "tablet"),
      ),
    ),
    h(
      "label",
      {},
      "Check the number by",
      h(
        "select",
        { name: "variant" },
        h("option", { value: "server" }, "a code the service texts me"),
        h("option", { value: "handset" }, "a code this handset texts the service"),
      ),
    ),
    h("button", { type: "submit" }, "Register"),
  );
  show(
    screen,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Register this handset"),
      h(
        "p",
        { class: "muted" },
        "Messages sent to your number are encrypted to a key this handset makes now and never leaves it.",
      ),
      form,
    ),
  );
}

async function registerByServerCode(number: string, deviceType: string): Promise<void> {
  const answer = await app.startRegistration({ phoneNumber: number, deviceType });
  if (answer.state === "confirmed") return inboxScreen();
  attachSim(app.phoneNumber!);
  const form = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        void attempt(async () => {
          await app.confirmRegistration(formValues(form).code!);
          await inboxScreen();
        });
      },
    },
    h(
      "label",
      {},
      "Code",
      h("input", {
        name: "code",
        inputmode: "numeric",
        autocomplete: "one-time-code",
        required: true,
        size: 10,
      }),
    ),
    h("button", { type: "submit" }, "Confirm"),
  );
  show(
    screen,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Enter the code"),
      h(
        "p",
        {},
        `The service texted a code to ${app.phoneNumber}. It is valid until ${when(answer.expiresAt)}.`,
      ),
      form,
    ),
  );
}

async function registerByHandsetCode(number: string, deviceType: string): Promise<void> {
  const { code, text, to } = await app.prepareHandsetCode();
  await app.registerWithHandsetCode({ phoneNumber: number, deviceType, code });
  attachSim(app.phoneNumber!);
  const sent = h("p");
  const sendButton = h(
    "button",
    {
      type: "button",
      onclick: () =>
        void attempt(async () => {
          if (!sim)
            throw new HandsafeError("handset.no_sim", "attach the simulated SIM below first", { status: 0 });
          await sim.line.send(text, to);
          show(sent, "Sent. Waiting for the service…");
        }),
    },
    "Send the text with the simulated SIM",
  );
  show(
    screen,
    h(
      "section",
      { class: "card" },
      h("h2", {}, "Text the service"),
      h(
        "p",
        {},
        "From ",
        h("strong", {}, app.phoneNumber!),
        ", send this text to ",
        h("strong", {}, to),
        ":",
      ),
      h("p", { class: "secret mono", "data-testid": "handset-code-text" }, text),
      h("p", {}, sendButton),
      sent,
    ),
  );
  await app.awaitRegistration({ timeoutMs: 10 * 60_000, pollMs: 1000 });
  await inboxScreen();
}

// --- the inbox -----------------------------------------------------------------------------------

function stopInbox(): void {
  if (inboxTimer !== undefined) clearInterval(inboxTimer);
  inboxTimer = undefined;
  void pushed?.close();
  pushed = undefined;
}

async function inboxScreen(): Promise<void> {
  stopInbox();
  attachSim(app.phoneNumber!);
  const list = h("div", { "data-testid": "inbox" });
  const refresh = () => attempt(() => renderInbox(list));
  show(
    screen,
    h(
      "section",
      { class: "card" },
      h("h2", {}, `Inbox of ${app.phoneNumber}`),
      h(
        "p",
        { class: "muted" },
        `Handset ${app.handsetId}. `,
        h("button", { class: "link", onclick: () => void refresh() }, "Refresh"),
        " · ",
        h("button", { class: "link", onclick: () => registrationScreen() }, "Register again"),
      ),
      list,
    ),
  );
  await renderInbox(list);
  inboxTimer = setInterval(() => void refresh(), INBOX_REFRESH_MS);
  // A new message is announced on the push stream the moment it is sealed to this handset.
  const live = h("span", { class: "muted", "data-testid": "push-state" }, "connecting…");
  list.before(h("p", {}, "Push: ", live));
  pushed = app.subscribe({
    onMessage: () => void refresh(),
    onEvent: (e) =>
      show(
        live,
        e.kind === "connected"
          ? "live"
          : e.kind === "stopped"
            ? `stopped (${e.error.code}): refreshing every 30 s`
            : `reconnecting (${e.error.code})`,
      ),
  });
}

async function renderInbox(list: HTMLElement): Promise<void> {
  const { messages, refused } = await app.pull({ all: true });
  for (const m of messages) if (m.state === "pending") await app.ack(m.id);
  show(
    list,
    messages.length === 0 && refused.length === 0 ? h("p", { class: "muted" }, "No message.") : null,
    ...messages.map((m) => messageView(m, list)),
    ...refused.map((r) =>
      h(
        "p",
        { class: "error" },
        `Message ${r.id} did not open on this handset (`,
        h("code", {}, r.code),
        ").",
      ),
    ),
  );
}

function messageView(m: OpenedMessage, list: HTMLElement): HTMLElement {
  const replyForm = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        const { text } = formValues(replyForm);
        void attempt(async () => {
          await app.reply(m.id, { type: "text", text: text! });
          say(h("span", { class: "ok" }, "Reply sent, encrypted in transit."));
          await renderInbox(list);
        });
      },
    },
    h("input", {
      name: "text",
      required: true,
      "aria-label": "Reply",
      placeholder: "Reply…",
      maxlength: 1000,
    }),
    h("button", { type: "submit", class: "secondary" }, "Reply"),
  );
  return h(
    "article",
    { class: "message", "data-message-id": m.id },
    h(
      "div",
      {},
      h("span", { class: "from" }, m.senderName),
      " ",
      h("span", { class: "muted" }, when(m.createdAt)),
    ),
    bodyView(m),
    h(
      "p",
      { class: "muted" },
      m.state === "read"
        ? h("span", { class: "state" }, "read")
        : h(
            "button",
            {
              class: "link",
              onclick: () => void attempt(() => app.read(m.id).then(() => renderInbox(list))),
            },
            "Mark read",
          ),
      " · ",
      h(
        "button",
        { class: "link", onclick: () => void attempt(() => app.delete(m.id).then(() => renderInbox(list))) },
        "Delete",
      ),
    ),
    replyForm,
  );
}

function bodyView(m: OpenedMessage): HTMLElement {
  if (m.body.type === "text") return h("p", { class: "body" }, m.body.text);
  const bytes = Uint8Array.from(atob(m.body.data.replace(/-/g, "+").replace(/_/g, "/")), (c) =>
    c.charCodeAt(0),
  );
  const url = URL.createObjectURL(new Blob([bytes], { type: m.body.mediaType }));
  return h(
    "p",
    { class: "body" },
    "Attachment ",
    h("a", { href: url, download: `${m.id}` }, `${m.body.mediaType}, ${bytes.length} bytes`),
  );
}

// --- the simulated SIM ---------------------------------------------------------------------------

function simScreen(): void {
  const saved = sessionStorage.getItem(SIM_TOKEN_KEY);
  if (sim) {
    show(
      simPanel,
      h("h2", {}, `Simulated SIM: texts to ${sim.line.number}`),
      sim.texts.length === 0
        ? h("p", { class: "muted" }, "No text yet.")
        : h(
            "ul",
            { "data-testid": "sim-texts" },
            ...sim.texts.map((t) =>
              h(
                "li",
                {},
                h("span", { class: "muted" }, `${when(t.at)} from ${t.from}: `),
                h("span", { class: "mono" }, t.text),
              ),
            ),
          ),
    );
    return;
  }
  const form = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        sessionStorage.setItem(SIM_TOKEN_KEY, formValues(form).token!);
        if (app.phoneNumber) attachSim(app.phoneNumber);
        else simScreen();
      },
    },
    h(
      "label",
      {},
      "Operator's admin token",
      h("input", { name: "token", type: "password", required: true, autocomplete: "off" }),
    ),
    h("button", { type: "submit", class: "secondary" }, saved ? "Replace" : "Attach"),
  );
  show(
    simPanel,
    h("h2", {}, "Simulated SIM"),
    h(
      "p",
      { class: "muted" },
      saved
        ? "Attached: the texts to this handset's number show here once it has one."
        : "With the built-in SMS centre (HANDSAFE_SMS_GATEWAY=outbox), the operator's token lets this page read the texts to its number and send texts from it, as a modem would.",
    ),
    form,
  );
}

/** Starts reading the texts to `number` when a SIM token is saved (again, for a new number). */
function attachSim(number: string): void {
  const token = sessionStorage.getItem(SIM_TOKEN_KEY);
  if (!token || sim?.line.number === number) {
    simScreen();
    return;
  }
  if (sim) clearInterval(sim.timer);
  const line = new OutboxLine(adminApi(token), number);
  const poll = async () => {
    try {
      const fresh = await line.texts();
      if (fresh.length > 0 && sim) {
        sim.texts = [...sim.texts, ...fresh].slice(-20);
        simScreen();
      }
    } catch (e) {
      show(simPanel, h("h2", {}, "Simulated SIM"), errorLine(e));
    }
  };
  sim = { line, texts: [], timer: setInterval(() => void poll(), SIM_REFRESH_MS) };
  simScreen();
  void poll();
}

// --- activation ----------------------------------------------------------------------------------

let device: Handset | undefined;

async function servicesScreen(): Promise<void> {
  device ??= await Handset.open(keystore, () => http, { url: origin() });
  const services = (await http.get<Array<{ uid: string; name: string }>>("/v1/services")).body;
  const activated = await listActivated(device);
  const form = h(
    "form",
    {
      onsubmit: (event: Event) => {
        event.preventDefault();
        const { email, password, service } = formValues(form);
        void attempt(async () => {
          const session = await login(device!, { email: email!, password: password! });
          const done = await activate(device!, session, service!);
          await servicesScreen();
          say(h("span", { class: "ok" }, `Activated ${done.serviceUid}: key ${done.fingerprint}`));
        });
      },
    },
    h(
      "label",
      {},
      "Email",
      h("input", { name: "email", type: "email", required: true, autocomplete: "username" }),
    ),
    h(
      "label",
      {},
      "Password",
      h("input", { name: "password", type: "password", required: true, autocomplete: "current-password" }),
    ),
    h(
      "label",
      {},
      "Service",
      h(
        "select",
        { name: "service" },
        ...services.map((sv) => h("option", { value: sv.uid }, `${sv.name} (${sv.uid})`)),
      ),
    ),
    h("button", { type: "submit", disabled: services.length === 0 }, "Activate"),
  );
  show(
    servicesPanel,
    h("h2", {}, "Services on this handset"),
    h(
      "p",
      { class: "muted" },
      `Handset ${device.id}. Each service's key is agreed by CPace with the one-time secret of a grant the service signed; the secret is never shown.`,
    ),
    activated.length === 0
      ? h("p", { class: "muted" }, "No service activated yet.")
      : h(
          "ul",
          { "data-testid": "activated" },
          ...activated.map((a) =>
            h(
              "li",
              {},
              h("strong", {}, a.serviceUid),
              " key ",
              h("code", { "data-fingerprint": a.serviceUid }, a.fingerprint),
            ),
          ),
        ),
    form,
  );
}

simScreen();
await attempt(servicesScreen);
if (app.registered) await inboxScreen();
else registrationScreen();
