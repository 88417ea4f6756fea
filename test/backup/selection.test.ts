import { describe, expect, it } from "vitest";
import { compileGlob, compileSelection, kindOfPath, selectItems } from "../../src/backup/selection.ts";
import { isHandsafeError } from "../../src/core/errors.ts";

const paths = [
  "contacts/alice",
  "contacts/bob",
  "messages/m1",
  "calendar/e1",
  "files/notes.txt",
  "files/photos/2026/a.jpg",
  "files/photos/b.jpg",
  "files/photos/raw/c.dng",
  "appdata/chat/db.sqlite",
  "appdata/maps/tiles/1/2.png",
];
const pick = (rules: Parameters<typeof selectItems>[1]) =>
  selectItems(
    paths.map((path) => ({ path })),
    rules,
  ).map((i) => i.path);

describe("selection rules (backup.md §2)", () => {
  it("{kind} picks a whole store", () => {
    expect(pick([{ kind: "contacts" }])).toEqual(["contacts/alice", "contacts/bob"]);
    expect(pick([{ kind: "appdata" }, { kind: "calendar" }])).toEqual([
      "calendar/e1",
      "appdata/chat/db.sqlite",
      "appdata/maps/tiles/1/2.png",
    ]);
  });

  it("{item} picks exactly one path", () => {
    expect(pick([{ item: "files/photos/b.jpg" }])).toEqual(["files/photos/b.jpg"]);
    expect(pick([{ item: "files/photos" }])).toEqual([]);
  });

  it("* stays within a segment, ** crosses segments (zero or more)", () => {
    expect(pick([{ pattern: "files/photos/*" }])).toEqual(["files/photos/b.jpg"]);
    expect(pick([{ pattern: "files/photos/**" }])).toEqual([
      "files/photos/2026/a.jpg",
      "files/photos/b.jpg",
      "files/photos/raw/c.dng",
    ]);
    expect(pick([{ pattern: "files/**/*.jpg" }])).toEqual(["files/photos/2026/a.jpg", "files/photos/b.jpg"]);
    expect(pick([{ pattern: "**/*.png" }])).toEqual(["appdata/maps/tiles/1/2.png"]);
    expect(pick([{ pattern: "appdata/*/db.*" }])).toEqual(["appdata/chat/db.sqlite"]);
    expect(compileGlob("a/**/**/b")("a/b")).toBe(true);
  });

  it("glob characters other than * are literal (no regex injection)", () => {
    expect(compileGlob("files/a.b")("files/aXb")).toBe(false);
    expect(compileGlob("files/(x|y)")("files/(x|y)")).toBe(true);
    expect(compileGlob("files/[ab]")("files/a")).toBe(false);
  });

  it("exclude rules apply after every include, whatever their place in the list", () => {
    expect(
      pick([
        { pattern: "files/raw/**", exclude: true },
        { pattern: "files/**" },
        { pattern: "**/raw/**", exclude: true },
      ]),
    ).toEqual(["files/notes.txt", "files/photos/2026/a.jpg", "files/photos/b.jpg"]);
    expect(pick([{ kind: "contacts" }, { item: "contacts/bob", exclude: true }])).toEqual(["contacts/alice"]);
  });

  it("an empty selection or only excludes selects nothing", () => {
    expect(pick([])).toEqual([]);
    expect(pick([{ kind: "files", exclude: true }])).toEqual([]);
  });

  it("a malformed rule is refused with backup.selection_invalid", () => {
    for (const bad of [
      [{ kind: "photos" }],
      [{ pattern: "" }],
      [{ pattern: "files//x" }],
      [{ kind: "files", item: "files/a" }],
      [{}],
      [null],
      "files/**",
    ]) {
      let caught: unknown;
      try {
        compileSelection(bad as never);
      } catch (e) {
        caught = e;
      }
      expect(isHandsafeError(caught, "backup.selection_invalid"), JSON.stringify(bad)).toBe(true);
    }
  });

  it("kindOfPath names the store of a path", () => {
    expect(kindOfPath("files/a")).toBe("files");
    expect(kindOfPath("contacts/x")).toBe("contacts");
    expect(kindOfPath("etc/passwd")).toBeUndefined();
  });
});
