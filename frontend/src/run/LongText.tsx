/**
 * Text of any length without freezing the page. Short text renders as it is. Long text is
 * split into blocks that React keeps (only the last one changes while it streams) and the
 * browser skips laying out while they are off screen (`content-visibility: auto`); while a
 * long text is still streaming, only its tail is shown, with the count of what is above.
 */
import { memo, useMemo, useState } from "react";

const SHORT = 12_000;
const CHUNK = 4_000;
const LIVE_TAIL = 6_000;

const Block = memo(function Block({ text }: { text: string }) {
  return <div className="text-block">{text}</div>;
});

/** Blocks of about CHUNK characters, ending at a line break when one is near. */
export function splitBlocks(text: string): string[] {
  const blocks: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + CHUNK);
    if (end < text.length) {
      const newline = text.lastIndexOf("\n", end);
      if (newline > start + CHUNK / 2) end = newline + 1;
    }
    blocks.push(text.slice(start, end));
    start = end;
  }
  return blocks;
}

export function LongText({ text, streaming }: { text: string; streaming: boolean }) {
  const [showAll, setShowAll] = useState(false);
  const long = text.length > SHORT;
  const tailOnly = long && streaming && !showAll;
  const shown = tailOnly ? text.slice(text.length - LIVE_TAIL) : text;
  // Block boundaries depend only on the text, so earlier blocks keep their identity.
  const blocks = useMemo(() => (long ? splitBlocks(shown) : [shown]), [long, shown]);
  if (!long) return <>{text}</>;
  return (
    <>
      {tailOnly && (
        <button type="button" className="link more" onClick={() => setShowAll(true)}>
          … {(text.length - LIVE_TAIL).toLocaleString("en")} earlier characters (show all)
        </button>
      )}
      {blocks.map((block, i) => (
        <Block key={i} text={block} />
      ))}
    </>
  );
}
