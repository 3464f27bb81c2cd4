// The sources under the answer: each retrieval's hits with document, page and score.
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";

import { Citations } from "./Citations";
import type { Retrieval } from "./runStore";

const retrieval: Retrieval = {
  node_id: "kb",
  query: "订单",
  mode: "hybrid",
  used: "keyword",
  seq: 3,
  hits: [
    { document: "订单状态.md", page: null, chunk: 0, score: 0.0328, heading: "订单状态", excerpt: "我想查询订单状态" },
    { document: "handbook.pdf", page: 2, chunk: 3, score: 0.0161 },
  ],
};

describe("Citations", () => {
  it("shows nothing without retrievals", () => {
    expect(renderToStaticMarkup(<Citations retrievals={[]} />)).toBe("");
  });

  it("lists each hit's document, page and score, with what ran", () => {
    const html = renderToStaticMarkup(<Citations retrievals={[retrieval]} />);
    expect(html).toContain("Sources");
    expect(html).toContain("“订单” · keyword (asked: hybrid)");
    const items = html.split('data-testid="citation"').slice(1);
    expect(items).toHaveLength(2);
    expect(items[0]).toContain("订单状态.md");
    expect(items[0]).toContain("score 0.033");
    expect(items[0]).toContain("我想查询订单状态");
    expect(items[0]).not.toContain("p. ");
    expect(items[1]).toContain("handbook.pdf");
    expect(items[1]).toContain("p. 2");
    expect(items[1]).toContain("score 0.016");
  });

  it("says when a retrieval found nothing", () => {
    const html = renderToStaticMarkup(<Citations retrievals={[{ ...retrieval, hits: [] }]} />);
    expect(html).toContain("nothing found");
    expect(html).not.toContain('data-testid="citation"');
  });
});
