"""`interpgram plan` and the report header count every icon a render optimises, the icons of the
link selections included (each selection re-plans its target element)."""
from __future__ import annotations

from interpgram.backends.cli import main
from interpgram.backends.links import icon_work
from interpgram.backends.pipeline import prepare, render

SPEC = """\
interpgram: 1
model: builtin:shapes-cnn
input: builtin:shapes/3
elements:
  where:
    content: {activation: {layer: conv4, atom: spatial}}
    presentation: heatmap
  icons:
    content: {activation: {layer: conv4, atom: {spatial: [0, 0]}}}
    presentation: featurevis
  channels:
    content: {activation: {layer: conv3, atom: {channel: 5}}}
    presentation: featurevis
links:
  - {from: where.hover, to: icons.from, precompute: 4}
"""


def test_plan_counts_the_icons_of_link_selections_and_the_render_makes_that_many(tmp_path, capsys):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    count, _ = icon_work(prepare(spec))
    # the elements: one icon at (0, 0) and one of channel 5; the link: 4 positions of conv4, an icon each
    assert (count.icons, count.exact) == (6, True)
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "icons: 6 feature-visualisation icon(s) to optimise (2 for the elements as the spec states them, 4 more" in out
    assert "link where.hover → icons.from: 4 selection(s) precomputed, 4 icon(s)" in out

    _, prep, results = render(spec, tmp_path / "report", cache=tmp_path / "cache", icon_steps=2)
    made = results.stats.icons_rendered + prep.link_stats.icons_rendered
    assert made == count.icons  # the render optimised exactly what the plan said
    assert prep.link_stats.icons_rendered == 4
    html = (tmp_path / "report" / "index.html").read_text()
    assert "6 rendered, 0 from the cache (of which 4 rendered" in html


def test_icons_chosen_by_the_results_are_a_bound(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("{spatial: [0, 0]}", "spatial").replace("builtin:shapes/3", "builtin:shapes/3-4")
                    .replace("atom: {channel: 5}}}\n    presentation: featurevis",
                             "atom: channel}}\n    presentation: {featurevis: {top: 4}}"))
    count, lines = icon_work(prepare(spec))
    # per image: its 8 strongest positions of conv4 and the 4 link positions (an icon each: each
    # image's own activation vectors); the 4 strongest conv3 channels of each image, at most 8 in all
    assert (count.icons, count.exact) == (2 * 8 + 2 * 4 + 8, False)
    assert lines[0].startswith("  icons: at most 32 feature-visualisation icon(s) to optimise (24 for the elements")


def test_without_a_cache_an_icon_two_stages_need_is_optimised_once(tmp_path):
    """The channel-attribution spec's link selections (one per class) need the icons the element itself
    shows for its own class: with --no-cache the render keeps them in memory for the run and optimises
    exactly as many icons as a render with a fresh cache, and says they were reused."""
    from pathlib import Path

    spec = Path(__file__).resolve().parents[2] / "specs" / "shapes" / "channel_attribution.yaml"
    _, fresh, fres = render(spec, tmp_path / "a", cache=tmp_path / "cache", icon_steps=2)
    _, off, ores = render(spec, tmp_path / "b", cache=False, icon_steps=2)
    made = [r.stats.icons_rendered + p.link_stats.icons_rendered for r, p in ((fres, fresh), (ores, off))]
    reused = ores.stats.icons_cached + off.link_stats.icons_cached
    assert made[0] == made[1] and reused > 0
    assert reused == fres.stats.icons_cached + fresh.link_stats.icons_cached
    assert not list((tmp_path / "b").glob("**/*.ig"))
    html = (tmp_path / "b" / "index.html").read_text()
    assert f"{made[1]} rendered, {reused} reused in this run" in html
