"""Every output format of `elman explain`: text, Markdown, LaTeX (a
standalone document; compiled when pdflatex is installed), JSON, Jupyter
reprs, and HTML rendered by a real headless Chromium (KaTeX bundled in the
page: math rendered, no raw TeX left visible, nothing fetched)."""
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from elman.cli import main
from elman.explain import explain


@pytest.fixture(scope="module")
def everything():
    return explain(["all"])


def test_markdown(everything):
    md = everything.render("markdown")
    assert md.startswith("# Where the gradients of seed.eq come from")
    assert md.count("$$") % 2 == 0 and md.count("$$") >= 40
    assert r"\frac{\partial J}{\partial U} = {h}^{\top} \delta_{2}" in md
    assert "| entry | finite difference | formula | |difference| |" in md


def _environments_balanced(tex):
    stack = []
    for kind, env in re.findall(r"\\(begin|end)\{([^}]+)\}", tex):
        if kind == "begin":
            stack.append(env)
        else:
            assert stack and stack.pop() == env, env
    assert not stack


def _braces_balanced(tex):
    depth = 0
    for m in re.finditer(r"\\.|[{}]", tex):
        depth += {"{": 1, "}": -1}.get(m[0], 0)
        assert depth >= 0
    assert depth == 0


@pytest.mark.parametrize("model", [None, "mlp", "tanh_rnn", "gru", "lstm", "tied", "elman2"])
def test_latex_is_a_standalone_document(model):
    tex = explain(["all"], model=model).render("latex")
    assert tex.startswith(r"\documentclass") and tex.rstrip().endswith(r"\end{document}")
    assert tex.count(r"\begin{document}") == 1
    _environments_balanced(tex)
    _braces_balanced(tex)
    assert not re.search(r"[^\x00-\x7f]", tex.split(r"\begin{document}")[1].replace("—", "")), \
        "prose must reach LaTeX as ASCII or TeX commands"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed (TeX is optional; "
                    "the document's structure is tested above)")
def test_latex_compiles(tmp_path):
    tex = explain(["all"]).render("latex")
    (tmp_path / "x.tex").write_text(tex, encoding="utf-8")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "x.tex"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:]
    assert (tmp_path / "x.pdf").stat().st_size > 10_000


def test_json(everything):
    data = json.loads(everything.render("json"))
    assert data["model"] == "seed.eq" and data["convention"] == "row"
    u = data["targets"][0]
    assert u["target"] == "U" and u["formula"]["text"] == "hᵀ δ2" and u["numpy"] == "h.T @ (yhat - y)"
    assert [c["quantity"] for c in u["chain"]] == ["z2", "U"]
    assert u["chain"][-1]["rules"] == ["product, the matrix on the right"]
    assert all(c["max_rel_error_at_derivation"] < 1e-6 for t in data["targets"] for c in t.get("chain", []))


def test_jupyter_reprs():
    e = explain(["U", "b2"])
    assert e._repr_markdown_().startswith("# Where")
    latex = e._repr_latex_()
    assert latex.startswith("$$\\begin{aligned}") and r"\frac{\partial J}{\partial b_{2}} &= \delta_{2}" in latex


def test_text_paragraphs_fit_a_terminal(everything):
    text = everything.text()
    prose = [ln for ln in text.splitlines() if not ln.startswith("    ")]
    assert max(map(len, prose)) <= 78


# --------------------------------------------------------------- HTML, browser

class _Visible(HTMLParser):
    """The text a reader sees: no scripts, styles, or KaTeX's hidden MathML."""

    def __init__(self):
        super().__init__()
        self.hidden, self.chunks, self.counts = 0, [], {}

    def handle_starttag(self, tag, attrs):
        cls = dict(attrs).get("class") or ""
        for c in cls.split():
            self.counts[c] = self.counts.get(c, 0) + 1
        if self.hidden or tag in ("script", "style") or "katex-mathml" in cls.split():
            self.hidden += 1

    def handle_endtag(self, tag):
        if self.hidden:
            self.hidden -= 1

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_data(self, data):
        if not self.hidden:
            self.chunks.append(data)


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("ELMAN_REQUIRE_BROWSER") == "1":
            pytest.fail("ELMAN_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("chromium not installed (apt-get install chromium); set ELMAN_REQUIRE_BROWSER=1 to require it")
    return exe


def test_html_is_self_contained(everything):
    page = everything.render("html")
    assert page.count("<script>") == 2 and "data:font/woff2;base64," in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "url(fonts/" not in page and "@import" not in page


def _dump_dom(page, tmp_path, script=""):
    """The DOM of ``page`` after headless Chromium has run its scripts (and
    ``script``, appended to the page)."""
    exe = _chromium()
    f = tmp_path / "page.html"
    f.write_text(page.replace("</body>", f"<script>{script}</script>\n</body>") if script else page, encoding="utf-8")
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                        "--dump-dom", f.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("model", [None, "tanh_rnn", "lstm"])
def test_html_renders_in_headless_chromium(model, tmp_path):
    page = explain(["all"], model=model).render("html")
    dom = _dump_dom(page, tmp_path)
    p = _Visible()
    p.feed(dom)
    n_math = page.count('class="math"')
    assert n_math > 50
    assert p.counts.get("katex", 0) == n_math, "every formula rendered by KaTeX"
    assert p.counts.get("katex-error", 0) == 0
    visible = "".join(p.chunks)
    for raw in ("$$", "\\(", "\\[", "\\frac", "\\delta", "^{\\top}"):
        assert raw not in visible, raw
    assert "Where the gradients" in visible and "finite difference" in visible


# Measures every picture as the browser lays it out: its size, and each label's box against the
# picture's edges and against every other label.
PROBE = """
var out = [];
document.querySelectorAll("figure.picture svg").forEach(function (svg) {
  var vb = svg.viewBox.baseVal, r = svg.getBoundingClientRect(), outside = [], overlap = [], boxes = [];
  svg.querySelectorAll("text").forEach(function (t) {
    var b = t.getBBox();
    if (b.x < -0.5 || b.y < -0.5 || b.x + b.width > vb.width + 0.5 || b.y + b.height > vb.height + 0.5)
      outside.push(t.textContent);
    boxes.forEach(function (o) {
      var w = Math.min(b.x + b.width, o.b.x + o.b.width) - Math.max(b.x, o.b.x);
      var h = Math.min(b.y + b.height, o.b.y + o.b.height) - Math.max(b.y, o.b.y);
      if (w > 1 && h > 1) overlap.push(t.textContent + " / " + o.s);
    });
    boxes.push({b: b, s: t.textContent});
  });
  out.push({id: svg.closest("figure").id, w: r.width, h: r.height, texts: boxes.length,
            outside: outside, overlap: overlap});
});
var pre = document.createElement("pre");
pre.id = "probe";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
"""


@pytest.mark.parametrize("model,targets", [("gru", ["all"]), ("lstm", ["bptt", "c"]), ("tied", ["all"]),
                                           ("elman2", ["bptt"]), (None, ["all"])])
def test_pictures_render_in_headless_chromium(model, targets, tmp_path):
    e = explain(targets, model=model)
    dom = _dump_dom(e.render("html"), tmp_path, PROBE)
    probe = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)[1]))
    assert [p["id"] for p in probe] == [f.name for f in e.figures] and probe
    for p in probe:
        assert p["w"] > 100 and p["h"] > 60 and p["texts"] >= 5, p
        assert p["outside"] == [], (p["id"], p["outside"])
        assert p["overlap"] == [], (p["id"], p["overlap"])


# ----------------------------------------------------------------------- CLI

def test_cli_explain_formats_and_out(tmp_path, capsys):
    assert main(["explain", "U"]) == 0
    out = capsys.readouterr().out
    assert "dJ/dU = hᵀ δ2 = hᵀ (ŷ − y), Dh×|V|." in out
    for fmt in ("markdown", "latex", "html", "json", "text"):
        target = tmp_path / f"u.{fmt}"
        assert main(["explain", "U", "b1", "--format", fmt, "--out", str(target)]) == 0
        assert target.stat().st_size > 1000
        assert not list(tmp_path.glob(".*tmp"))
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "u.json").read_text())["targets"][1]["target"] == "b1"


def test_cli_explain_all_verify_and_errors(capsys):
    assert main(["explain", "all", "--verify", "--convention", "column"]) == 0
    out = capsys.readouterr().out
    assert "Verification" in out and "FAIL" not in out and out.count(" pass") >= 8
    assert main(["explain", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elman: error: unknown target 'nonsense'") and err.count("\n") == 1
