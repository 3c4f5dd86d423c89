"""The pictures: a shape diagram of the products behind each gradient, and
the unrolled graph with the gradient paths into each state. Read back as
XML here; laid out by a real browser in test_explain_render.py."""
import base64
import json
import xml.etree.ElementTree as ET

import pytest

from elman.cli import main
from elman.explain import engine, equations, explain
from elman.explain.pictures import UNIT, unrolled_picture

NS = {"s": "http://www.w3.org/2000/svg"}


def _svg(text):
    return ET.fromstring(text)


def _texts(root):
    return [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_U_is_a_column_times_a_row():
    fig = next(f for f in explain(["U"]).figures if f.name == "shapes-U")
    root = _svg(fig.svg)
    texts = _texts(root)
    assert "dJ/dU = hᵀ δ2" in texts
    assert "a column times a row, (Dh×1)(1×|V|) = Dh×|V|: the outer product, every pair of entries multiplied" \
        in texts
    # the boxes, at the seed's sizes (Dh=4, |V|=5): hᵀ 4×1, δ2 1×5, dJ/dU 4×5, after ŷ, y, dJ/dz2 (1×5 each)
    boxes = [(float(r.get("height")) / UNIT, float(r.get("width")) / UNIT) for r in root.iterfind("s:rect", NS)]
    assert boxes == [(1, 5), (1, 5), (1, 5), (4, 1), (1, 5), (4, 5)]
    for label in ("hᵀ", "δ2", "dJ/dU", "Dh", "|V|"):
        assert label in texts


def test_hadamard_and_transposed_products_are_drawn_as_such():
    figs = {f.name: f for f in explain(["z", "Wy"], model="gru").figures}
    t = _texts(_svg(figs["shapes-z"].svg))
    assert "entry by entry, (1×Dh) ⊙ (1×Dh) = 1×Dh: no sum, no transpose, the shape stays" in t
    t = _texts(_svg(next(f for f in explain(["E"], model="tied").figures).svg))
    assert "a column times a row, (|V|×1)(1×d) = |V|×d: the outer product, every pair of entries multiplied" in t
    assert "δ2ᵀ" in t


@pytest.mark.parametrize("name,sums", [
    ("seed", ["dJ/dh(t) = ① + ②"]),
    ("lstm", ["dJ/dc(t) = ① + ②", "dJ/dh(t) = ③ + ④ + ⑤ + ⑥ + ⑦"]),
    ("elman2", ["dJ/dh1(t) = ① + ②", "dJ/dh2(t) = ③ + ④"]),
])
def test_unrolled_graph_labels_every_path_into_each_state(name, sums):
    d = engine.derive(equations.load(name))
    root = _svg(unrolled_picture(d))
    texts = _texts(root)
    assert [t for t in texts if t.startswith("dJ/d")] == sums
    assert {"step t−1", "step t", "step t+1"} <= set(texts)
    paths = [p for p in root.iterfind("s:path", NS) if p.get("stroke-dasharray") == "5,3"]
    assert len(paths) == sum(s.count("+") + 1 for s in sums)
    # three columns of the model's quantities; the boxes never overlap
    nodes = [r for r in root.iterfind("s:rect", NS) if r.get("rx") == "6"]
    drawn = [e.lhs for e in d.model.equations] + [n for n, dc in d.model.decls.items()
                                                 if dc.role == "input" and n not in d.model.recur]
    assert len(nodes) == 3 * len(drawn)
    box = [(float(r.get("x")), float(r.get("y")), float(r.get("width")), float(r.get("height"))) for r in nodes]
    for i, a in enumerate(box):
        for b in box[:i]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def test_seed_paths_are_the_recurrence():
    texts = _texts(_svg(unrolled_picture(engine.derive(equations.load("seed")))))
    assert "① δ2(t) Uᵀ    (through z2(t))" in texts and "② δ1(t+1) Hᵀ    (through z1(t+1))" in texts


def test_lstm_cell_path_is_f():
    texts = _texts(_svg(unrolled_picture(engine.derive(equations.load("lstm")))))
    assert "② dJ/dc(t+1) ⊙ f(t+1)    (through c(t+1))" in texts


def test_cli_svg_writes_one_file_per_picture(tmp_path, capsys):
    out = tmp_path / "pics"
    assert main(["explain", "U", "b1", "bptt", "--format", "svg", "--out", str(out)]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["shapes-U.svg", "shapes-b1.svg", "unrolled.svg"]
    inline = {f.name: f.svg for f in explain(["U", "b1", "bptt"]).figures}
    for name in files:
        text = (out / name).read_text(encoding="utf-8")
        assert text == inline[name[:-4]]
        assert _svg(text).tag == "{http://www.w3.org/2000/svg}svg"
    assert main(["explain", "U", "--format", "svg"]) == 2
    assert capsys.readouterr().err.endswith("--format svg writes one file per picture: give --out DIR\n")
    (tmp_path / "file").write_text("x")
    assert main(["explain", "U", "--format", "svg", "--out", str(tmp_path / "file")]) == 2
    assert "needs a directory" in capsys.readouterr().err


def test_pictures_in_every_format():
    e = explain(["Wy", "bptt"], model="tanh_rnn")
    assert "[Picture shapes-Wy.svg: The products on the way to dJ/dWy" in " ".join(e.text().split())
    assert "[Picture unrolled.svg: The computation graph over three steps" in e.text()
    md = e.render("markdown")
    uri = md.split("![unrolled](data:image/svg+xml;base64,", 1)[1].split(")", 1)[0]
    assert base64.b64decode(uri).decode("utf-8") == e.figures[-1].svg
    assert r"\emph{Picture unrolled.svg" in e.render("latex")
    data = json.loads(e.render("json"))
    assert [f["file"] for t in data["targets"] for f in t["figures"]] == ["shapes-Wy.svg", "unrolled.svg"]
    assert data["targets"][-1]["figures"][0]["svg"] == e.figures[-1].svg
    page = e.render("html")
    assert page.count("<figure") == len(e.figures) == 2 and page.count("<div class=\"svg\"><svg xmlns=") == 2
