"""Knowledge bases: a workspace's documents, parsed, split, embedded and indexed for
retrieval.

The pure building blocks live in modules with no database access, so ingestion and the
retrieval component share them and they are tested on their own:

- `knowledge.parsing`: bytes of an uploaded file -> text sections (page, heading), with
  the file's real type checked against its name and every bad file mapped to a
  `ParseError` with a short code;
- `knowledge.splitting`: sections -> chunk drafts with LangChain's recursive splitter and
  separators that suit Chinese as well as English;
- `knowledge.keyword`: a tokenizer that works for CJK text (character bigrams) and a BM25
  index built once per knowledge-base version.
"""
