"""The report's page rendered by jinja2 alone: nbconvert's lab template, without nbconvert.

``import nbconvert`` imports every exporter, preprocessor and writer it has, and their libraries
(bleach, BeautifulSoup, IPython, traitlets' configuration): ~25 MiB and ~0.3 s in the process
that renders the report, more than what a 5,000-cell run holds besides (issue 22). A page needs
only the lab template's files (installed with nbconvert as data, under
``share/jupyter/nbconvert/templates``), jinja2, pygments and mistune. ``PageExporter`` renders
those files as nbconvert's ``HTMLExporter(template_name="lab", embed_images=True)`` does for
nbjob (``report.exporter``): the same template paths, loaders, resources and globals, the two
preprocessors that change anything by default (the pygments style sheet in the page's head, and
``%%bash``-like cells highlighted in their language), and filters of nbjob's own that give
nbconvert's markup (``nbjob.report_filters``, ``nbjob.report_markdown``, ``report.highlight``).
The page is nbconvert's, byte for byte (tests/test_report_page.py renders a corpus both ways).

nbconvert stays installed (its templates), and is the fallback: a template these filters do not
cover (a newer nbconvert's), or a page this renderer fails on, is rendered by nbconvert's
exporter instead (``fell_back`` says why), so a page is never lost to this module.
"""

from __future__ import annotations

import functools
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    DictLoader,
    Environment,
    FileSystemLoader,
    TemplateNotFound,
    pass_context,
)
from markupsafe import Markup

THEME = "light"
TEMPLATE_NAME = "lab"
TEMPLATE_FILE = "index.html.j2"
EXTENSION = ".html.j2"
RAW_KEY = "<memory>"  # nbconvert's key of its (empty) raw template
# HTMLExporter's resources that are plain values (nbconvert 7.17's defaults).
RESOURCES: dict[str, Any] = {
    "output_extension": ".html",
    "theme": THEME,
    "require_js_url": "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.1.10/require.min.js",
    "mathjax_url": (
        "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js"
        "?config=TeX-AMS_CHTML-full,Safe"
    ),
    "mermaid_js_url": "https://cdnjs.cloudflare.com/ajax/libs/mermaid/11.10.0/mermaid.esm.min.mjs",
    "mermaid_layout_elk_js_url": (
        "https://cdnjs.cloudflare.com/ajax/libs/mermaid-layout-elk/0.1.9/"
        "mermaid-layout-elk.esm.min.mjs"
    ),
    "jquery_url": "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.3/jquery.min.js",
    "jupyter_widgets_base_url": "https://unpkg.com/",
    "widget_renderer_url": "",
    "html_manager_semver_range": "*",
    "should_sanitize_html": False,
    "language_code": "en",
    "should_not_encode_svg": False,
    "raw_mimetypes": ["text/html", ""],
    "output_mimetype": "text/html",
}
INCLUDE = (
    "include_code",
    "include_markdown",
    "include_raw",
    "include_unknown",
    "include_input",
    "include_output",
    "include_output_stdin",
    "include_input_prompt",
    "include_output_prompt",
)
# HighlightMagicsPreprocessor's languages: a code cell starting with one is highlighted in it.
MAGICS = {
    "%%R": "r",
    "%%bash": "bash",
    "%%cython": "cython",
    "%%javascript": "javascript",
    "%%julia": "julia",
    "%%latex": "latex",
    "%%octave": "octave",
    "%%perl": "perl",
    "%%ruby": "ruby",
    "%%sh": "sh",
    "%%sql": "sql",
}
_MAGIC = re.compile(rf"^\s*({'|'.join(MAGICS)})\s+")


class Resources(dict[str, Any]):
    """nbconvert's ``ResourcesDict``: a missing key reads as ``""``."""

    def __missing__(self, key: str) -> str:
        return ""


class PageExporter:
    """The lab template's pages, ``from_notebook_node`` as nbconvert's exporter's.
    ``templates``: more templates by name (``nbjob.report_cells``'), ``template_file`` the one
    rendered (the lab template's page without it). Compiles the template when made: a template
    these filters cannot render is a ``jinja2.TemplateError`` here, not at the run's end. The
    exporters of one process share one environment per set of templates (its templates
    compiled once: the compiler's memory is most of a first page's)."""

    def __init__(
        self, templates: dict[str, str] | None = None, template_file: str | None = None
    ) -> None:
        key = tuple(sorted((templates or {}).items()))
        self.environment = _environment(key, os.getcwd())
        self.template = self.environment.get_template(template_file or TEMPLATE_FILE)
        self.fallback: Any = None  # nbconvert's exporter, made when a page needed it
        self.fell_back: str | None = None  # why the last page was nbconvert's
        self._fallback_options = (templates, template_file)

    def from_notebook_node(
        self, nb: Any, resources: dict[str, Any] | None = None, **_: Any
    ) -> tuple[str, dict[str, Any]]:
        """The page of ``nb`` (not changed) and its resources."""
        try:
            page, given = self._render(nb, resources)
            self.fell_back = None
            return page, given
        except Exception as exc:  # nbconvert's exporter renders it instead
            self.fell_back = f"{type(exc).__name__}: {str(exc)[:300]}"
            if self.fallback is None:
                from nbjob import report_nbconvert

                self.fallback = report_nbconvert.exporter(*self._fallback_options)
            page, given = self.fallback.from_notebook_node(nb, resources=resources)
            return str(page), given

    def _render(self, nb: Any, given: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        from nbjob import report

        resources = self._resources(nb, given)
        page = self.template.render(nb=nb, resources=resources).lstrip("\r\n")
        return report.accessible(page), resources

    def _resources(self, nb: Any, given: dict[str, Any] | None) -> Resources:
        """HTMLExporter's resources for ``nb`` (its ``_init_resources``, then the
        ``language``, the pygments style sheet, the content filter)."""
        env = self.environment
        resources = Resources(given or {})
        if "metadata" in resources:
            resources["metadata"] = Resources(resources["metadata"])
        else:
            resources["metadata"] = Resources(name="Notebook")
        resources.update(RESOURCES)
        resources["deprecated"] = _deprecated
        resources["include_css"] = functools.partial(_include_css, env)
        resources["include_js"] = functools.partial(_include_js, env)
        resources["include_url"] = functools.partial(_include_url, env)
        resources["include_lab_theme"] = _no_lab_theme
        if "language" in nb["metadata"]:
            resources["language"] = nb["metadata"]["language"].lower()
        resources["inlining"] = {"css": _inlined_css(resources["config_dir"])}
        resources["global_content_filter"] = {name: True for name in INCLUDE}
        resources["global_content_filter"]["no_prompt"] = False
        return resources


@functools.lru_cache(maxsize=4)
def _environment(templates: tuple[tuple[str, str], ...], cwd: str) -> Any:
    """nbconvert's jinja2 environment for the lab template (its paths from ``cwd`` too, as
    nbconvert's), ``templates`` added, nbjob's filters in it."""
    from nbjob import report_filters

    loaders: list[Any] = [DictLoader(dict(templates))] if templates else []
    loaders += [_Tolerant(FileSystemLoader(template_paths(cwd))), DictLoader({RAW_KEY: ""})]
    env = Environment(loader=ChoiceLoader(loaders), extensions=["jinja2.ext.loopcontrols"])
    env.globals["uuid4"] = uuid.uuid4
    env.filters.update(report_filters.FILTERS)
    env.filters["markdown2html"] = _markdown2html
    env.filters["highlight_code"] = _highlight_code
    env.filters["filter_data_type"] = _filter_data_type
    env.filters["clean_html"] = _clean_html
    return env


@pass_context
def _highlight_code(
    context: Any, source: str, language: str | None = None, metadata: Any = None
) -> str:
    """Highlight2HTML's markup, in the notebook's language; a cell starting with ``%%bash``
    (say) in that language, as HighlightMagicsPreprocessor makes nbconvert's do."""
    from nbjob import report

    if language is None:
        info = context["nb"].metadata.get("language_info", {})
        language = info.get("pygments_lexer", info.get("name")) or "ipython3"
    if found := _MAGIC.match(source):
        metadata = {**(metadata or {}), "magics_language": MAGICS[found.group(1)]}
    return report.Highlighted(report.highlight(source, language, metadata))


@pass_context
def _filter_data_type(context: Any, output: Any) -> list[str]:
    """WidgetsDataTypeFilter's choice, with the notebook's widget state."""
    from nbjob import report_filters

    return report_filters.DataTypes(context["nb"].metadata)(output)


@pass_context
def _markdown2html(context: Any, source: str) -> str:
    """HTMLExporter's ``markdown2html``: the cell's attachments and the notebook's folder (for
    its images) from the template's context."""
    from nbjob import report_markdown

    attachments = context.get("cell", {}).get("attachments", {})
    path = context.get("resources", {}).get("metadata", {}).get("path", "")
    return report_markdown.markdown2html(source, attachments=attachments, path=path)


def _clean_html(element: Any) -> Any:
    """``clean_html`` for everything but pygments' output (``report.Highlighted``)."""
    from nbjob import report, report_filters

    return (
        element if isinstance(element, report.Highlighted) else report_filters.clean_html(element)
    )


class _Tolerant(BaseLoader):
    """nbconvert's ``ExtensionTolerantLoader``: ``name`` not found, ``name`` + ``.html.j2``."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def get_source(self, environment: Any, template: str) -> Any:
        try:
            return self.loader.get_source(environment, template)
        except TemplateNotFound:
            if template.endswith(EXTENSION):
                raise TemplateNotFound(template) from None
            return self.loader.get_source(environment, template + EXTENSION)

    def list_templates(self) -> list[str]:
        return list(self.loader.list_templates())


def template_paths(cwd: str) -> list[str]:
    """Where nbconvert looks for the lab template's files, in its order: each template of
    the chain (lab, then the ``base_template`` its conf.json names) in the working folder and
    each Jupyter data folder, then the data folders themselves."""
    from jupyter_core.paths import jupyter_path

    roots = jupyter_path()
    bases = [cwd, *(os.path.join(root, "nbconvert", "templates") for root in roots)]
    paths = []
    for name in _template_chain(bases):
        for base in bases:
            if os.path.exists(path := os.path.join(base, name)):
                paths.append(path)
    for root, base in zip(roots, bases[1:], strict=True):
        paths += [root, base, os.path.join(base, "compatibility")]
    return paths + [p for p in jupyter_path("nbconvert", "templates") if os.path.exists(p)]


def _template_chain(bases: list[str]) -> list[str]:
    """lab, then the templates it extends by its conf.json's ``base_template`` (base), each
    template's folder looked for in ``bases`` in turn."""
    chain: list[str] = []
    name: str | None = TEMPLATE_NAME
    while name is not None and name not in chain:
        chain.append(name)
        conf: dict[str, Any] = {}
        for base in bases:
            with_conf = os.path.join(base, name, "conf.json")
            if os.path.exists(with_conf):
                with open(with_conf, encoding="utf-8") as file:
                    conf = {**json.load(file), **conf}  # the first found wins (nbconvert's)
        name = conf.get("base_template")
    return chain


def _include_css(env: Any, name: str) -> Markup:
    source = env.loader.get_source(env, name)[0]
    return Markup(f'<style type="text/css">\n{source}</style>')


def _include_js(env: Any, name: str, module: bool = False) -> Markup:
    kind = 'type="module"' if module else ""
    return Markup(f"<script {kind}>\n{env.loader.get_source(env, name)[0]}</script>")


def _include_url(env: Any, name: str) -> Markup:
    import base64
    import mimetypes

    mime_type, _ = mimetypes.guess_type(name)
    try:
        data = env.loader.get_source(env, name)[0].encode("utf8")
    except UnicodeDecodeError:  # a binary file (a font, an image): read as it is
        found = [Path(p, name) for p in template_paths(os.getcwd()) if Path(p, name).is_file()]
        if not found:
            raise ValueError(f"No file {name!r} found") from None
        data = found[0].read_bytes()
    return Markup(f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}")


def _no_lab_theme(name: str) -> Markup:
    raise NotImplementedError(f"the {name!r} JupyterLab theme (nbjob's pages are light)")


def _deprecated(msg: str) -> None:
    """A template's deprecation warning, as nbconvert's (warnings in nbjob's process are
    not printed: stderr is JSON lines)."""
    import warnings

    warnings.warn(msg, DeprecationWarning, stacklevel=2)


@functools.lru_cache(maxsize=1)
def _pygments_css() -> str:
    """CSSHTMLHeaderPreprocessor's style sheet: JupyterLab's pygments style."""
    from jupyterlab_pygments import JupyterStyle
    from pygments.formatters import HtmlFormatter

    return str(HtmlFormatter(style=JupyterStyle).get_style_defs(".highlight"))


def _inlined_css(config_dir: str) -> list[str]:
    """The style sheets CSSHTMLHeaderPreprocessor inlines: pygments', and a ``custom.css``
    under ``config_dir`` (none: the working folder) when there is one."""
    css = [_pygments_css()]
    custom = Path(config_dir, "custom", "custom.css")
    if custom.is_file():
        css.append(custom.read_text(encoding="utf-8"))
    return css
