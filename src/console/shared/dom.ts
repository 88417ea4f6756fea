/**
 * The few DOM helpers the console's pages are written with. Text always goes in as text nodes
 * (never as HTML), so nothing a server or a sender wrote can become markup.
 */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | undefined | ((event: Event) => void)>;

/** An element: `on*` attributes become listeners, `true` a bare attribute, false/undefined none. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.slice(2).toLowerCase(), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(
      typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c,
    );
  }
}

/** Replaces everything in `parent` with `children`. */
export function show(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

/** A table: one header row, then a row per item. */
export function table<T>(
  columns: ReadonlyArray<readonly [string, (item: T) => Child]>,
  items: readonly T[],
  empty = "Nothing yet.",
): HTMLElement {
  if (items.length === 0) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ...columns.map(([name]) => h("th", {}, name)))),
    h(
      "tbody",
      {},
      ...items.map((item) => h("tr", {}, ...columns.map(([, cell]) => h("td", {}, cell(item))))),
    ),
  );
}

/** A progress bar with its label: `done` of `total`. */
export function progress(done: number, total: number, label?: string): HTMLElement {
  const percent = total > 0 ? Math.round((done / total) * 100) : 0;
  const fill = h("div", { class: "fill" });
  // Through the CSSOM: the pages' CSP refuses style attributes.
  fill.style.width = `${percent}%`;
  return h(
    "div",
    {
      class: "progress",
      role: "progressbar",
      "aria-valuenow": percent,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
    },
    fill,
    h("span", {}, label ?? `${percent}%`),
  );
}

export const when = (ms: number | null | undefined): string =>
  ms === null || ms === undefined ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);

/** The values of a form's named fields, as strings. */
export function formValues(form: HTMLFormElement): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new FormData(form)) if (typeof v === "string") out[k] = v.trim();
  return out;
}

/** A line that says what went wrong, with the error's stable code when it has one. */
export function errorLine(e: unknown): HTMLElement {
  const code =
    typeof e === "object" && e !== null && "code" in e ? String((e as { code: unknown }).code) : "error";
  const message = e instanceof Error ? e.message : String(e);
  return h("p", { class: "error", role: "alert" }, h("code", {}, code), " ", message);
}
