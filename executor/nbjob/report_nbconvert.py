"""nbconvert's own exporter for the report's page: the fallback of ``nbjob.report_page``.

``report.exporter`` renders nbconvert's lab template without importing nbconvert; a template it
cannot compile (a newer nbconvert's), or a page it fails on, is rendered here, by nbconvert's
``HTMLExporter`` as nbjob configures it, and the tests render their corpus here too to compare.
"""

from __future__ import annotations

import warnings
from typing import Any

from nbjob.report import Highlighted, accessible, highlight


def _clean_html(element: Any) -> Any:
    """nbconvert's ``clean_html`` (bleach) for everything but pygments' output."""
    from nbconvert.filters.strings import clean_html

    return element if isinstance(element, Highlighted) else clean_html(element)


def exporter(templates: dict[str, str] | None = None, template_file: str | None = None) -> Any:
    """``HTMLExporter(template_name="lab", embed_images=True)``, its inline HTML kept whole, in
    about a third of the time (``from_notebook_node``; the same page, tested). ``templates``:
    more templates by name (``nbjob.report_cells``'), ``template_file`` one of them.

    With ``embed_images`` nbconvert parses each inline HTML tag of markdown on its own to find
    images, which closes an opening tag at once: ``<span style="color:red">text</span>`` becomes
    ``<span style="color:red"></span>text`` (jupyter/nbconvert#2020), so nbjob's red banners,
    and users' inline styling, would lose their style. Only tags with an ``<img`` go that way.
    """
    from jinja2 import pass_context
    from nbconvert import HTMLExporter  # heavy: only ever imported at the end of a run

    # A metric (a scrapbook scrap, nothing to show) would make nbconvert print a warning to
    # stderr, which is JSON lines only (and the page rightly shows nothing for it).
    warnings.filterwarnings("ignore", "Your element with mimetype", UserWarning)
    from nbconvert.exporters.templateexporter import TemplateExporter
    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter

    class _Highlighter(Highlight2HTML):
        """nbconvert's, with one pygments formatter and lexer a language instead of new ones
        for each cell (the formatter's style sheet alone was a third of a page's time)."""

        def __call__(self, source: str, language: str | None = None, metadata: Any = None) -> str:
            return highlight(source, language or self.pygments_lexer, metadata)

    class Renderer(IPythonRenderer):
        def inline_html(self, html: str) -> str:
            return str(super().inline_html(html)) if "<img" in html.lower() else html

    class Exporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context: Any, source: str) -> str:  # as nbconvert 7's
            cell = context.get("cell", {})
            renderer = Renderer(
                escape=False,
                attachments=cell.get("attachments", {}),
                embed_images=self.embed_images,
                path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                anchor_link_text=self.anchor_link_text,
                exclude_anchor_links=self.exclude_anchor_links,
                **self.lexer_options,
            )
            return str(MarkdownWithMath(renderer=renderer).render(source))

        def from_notebook_node(self, nb: Any, resources: Any = None, **kw: Any) -> Any:
            """HTMLExporter's steps without its whole-page BeautifulSoup pass (``accessible``
            does what it did) and without bleach over pygments' own output."""
            info = nb.metadata.get("language_info", {})
            highlight = _Highlighter(pygments_lexer=info.get("pygments_lexer", info.get("name")))
            resources = self._init_resources(resources)
            widgets = WidgetsDataTypeFilter(
                notebook_metadata=self._nb_metadata, parent=self, resources=resources
            )
            self.register_filter("highlight_code", lambda *a, **k: Highlighted(highlight(*a, **k)))
            self.register_filter("clean_html", _clean_html)
            self.register_filter("filter_data_type", widgets)
            html, resources = TemplateExporter.from_notebook_node(self, nb, resources, **kw)
            return accessible(html), resources

    # One validation after nbconvert's preprocessors, not one after each (twelve).
    options: dict[str, Any] = {}
    if templates:
        from jinja2 import DictLoader

        options["extra_loaders"] = [DictLoader(templates)]
    if template_file:
        options["template_file"] = template_file
    return Exporter(template_name="lab", embed_images=True, optimistic_validation=True, **options)
