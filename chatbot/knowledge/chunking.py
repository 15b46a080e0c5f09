"""Splitting a Markdown article into passages small enough to embed and quote."""

import re

MAX_WORDS = 90

_HEADING = re.compile(r"^#{1,6}\s+(.*)$")


def markdown_plain(text: str) -> str:
    """Markdown emphasis, links and list markers dropped; the words kept."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_`]{1,3}", "", text)
    text = re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", text, flags=re.M)
    return re.sub(r"[ \t]+", " ", text).strip()


def article_chunks(title: str, body: str, *, max_words: int = MAX_WORDS) -> list[str]:
    """Passages of at most ~max_words words, each led by its section heading.

    Paragraphs are kept whole where they fit; a section's paragraphs are packed together
    until the next would overflow; an overlong paragraph is cut at sentence ends.
    """
    sections: list[tuple[str, list[str]]] = [("", [])]
    for block in re.split(r"\n\s*\n", body.replace("\r\n", "\n")):
        block = block.strip()
        if not block:
            continue
        lines = block.split("\n")
        heading = _HEADING.match(lines[0])
        if heading:
            sections.append((markdown_plain(heading.group(1)), []))
            lines = lines[1:]
        rest = markdown_plain("\n".join(lines))
        if rest:
            sections[-1][1].append(rest.replace("\n", " "))

    chunks: list[str] = []
    for section_heading, paragraphs in sections:
        if section_heading.strip().lower() == title.strip().lower():
            section_heading = ""
        lead = f"{section_heading}: " if section_heading else ""
        pieces: list[str] = []
        for paragraph in paragraphs:
            if len(paragraph.split()) <= max_words:
                pieces.append(paragraph)
            else:
                pieces.extend(_sentence_groups(paragraph, max_words))
        current: list[str] = []
        for piece in pieces:
            if current and len(" ".join(current + [piece]).split()) > max_words:
                chunks.append(lead + " ".join(current))
                current = []
            current.append(piece)
        if current:
            chunks.append(lead + " ".join(current))
    return chunks or [markdown_plain(title)]


def _sentence_groups(paragraph: str, max_words: int) -> list[str]:
    groups: list[str] = []
    current: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        if current and len(" ".join(current + [sentence]).split()) > max_words:
            groups.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        groups.append(" ".join(current))
    return groups


def passage_embedding_text(title: str, passage: str) -> str:
    """What is embedded for a passage: the article title gives short passages context."""
    return f"{title}. {passage}"
