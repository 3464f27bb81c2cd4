import { describe, expect, it } from "vitest";
import { conversationListPath, MAX_SEARCH_CHARS, searchText } from "./search";

describe("conversation search", () => {
  it("lists every conversation for an empty or blank query", () => {
    expect(conversationListPath(7, "")).toBe("flows/7/conversations");
    expect(conversationListPath(7, "   ")).toBe("flows/7/conversations");
  });

  it("sends the query trimmed and encoded, Chinese included", () => {
    const path = conversationListPath(7, "  订单 status & more ");
    expect(path).toBe("flows/7/conversations?q=%E8%AE%A2%E5%8D%95+status+%26+more");
    expect(new URLSearchParams(path.split("?")[1]).get("q")).toBe("订单 status & more");
  });

  it("cuts a long query to what the server accepts without splitting a character", () => {
    const long = "😀".repeat(MAX_SEARCH_CHARS + 5);
    const cut = searchText(long);
    expect(Array.from(cut)).toHaveLength(MAX_SEARCH_CHARS);
    expect(cut.endsWith("😀")).toBe(true);
  });
});
