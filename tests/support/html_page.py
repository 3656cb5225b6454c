"""What an HTML page served by a gateway loads, links to and carries (the /docs and /console pages' tests)."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """What a page loads (scripts, stylesheets, images), what it links to, its ids and inline code."""

    def __init__(self) -> None:
        super().__init__()
        self.loaded: list[str] = []
        self.linked: list[str] = []
        self.ids: set[str] = set()
        self.inline: list[str] = []  # inline scripts and style attributes: the CSP would refuse them
        self.body: dict[str, str | None] = {}
        self.error_role = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.loaded.append(str(attributes["src"]))
            else:
                self.inline.append("script")
        elif tag in ("link", "img"):
            url = str(attributes.get("href") or attributes.get("src"))
            if url != "data:,":  # the empty icon: no request for /favicon.ico
                self.loaded.append(url)
        elif tag == "a" and attributes.get("href"):
            self.linked.append(str(attributes["href"]))
        elif tag == "body":
            self.body = attributes
        if "style" in attributes or tag == "style":
            self.inline.append(f"style on <{tag}>")
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        self.error_role = self.error_role or attributes.get("data-role") == "error"


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page
