import numpy as np
import webcolors
import yaml

from converters.helpers import colors


def test_word_split_covers_every_css3_name_exactly():
    words = yaml.safe_load(colors.WORDS_FILE.read_text())
    assert set(words) == set(webcolors.names("css3")) and len(words) == 147
    assert all(w.replace(" ", "") == name for name, w in words.items())
    assert words["lightgoldenrodyellow"] == "light goldenrod yellow" and words["rosybrown"] == "rosy brown"


def test_palette_has_the_138_distinct_colours():
    rgb, names = colors.palette()
    assert rgb.shape == (138, 3) and len(set(names)) == 138
    assert "cyan" not in names and "magenta" not in names and "grey" not in names and "dim grey" not in names


def test_known_colours_and_multi_word_names():
    got = colors.nearest_names(
        [
            [188, 143, 142],
            [250, 250, 210],
            [199.5, 21.0, 133.0],
            [156.98, 82.51, 79.0],
            [222, 184, 135],
            [100.0, 149.0, 237.0],
        ]
    )
    assert got.to_pylist() == [
        "rosy brown",
        "light goldenrod yellow",
        "medium violet red",
        "sienna",
        "burly wood",
        "cornflower blue",
    ]
    assert colors.nearest_name((188, 143, 142)) == "rosy brown"


def test_duplicate_names_resolve_to_the_alphabetically_first():
    got = colors.nearest_names(
        [[0, 255, 255], [255, 0, 255], [128, 128, 128], [47, 79, 79], [105, 105, 105], [211, 211, 211], [119, 136, 153]]
    )
    assert got.to_pylist() == [
        "aqua",
        "fuchsia",
        "gray",
        "dark slate gray",
        "dim gray",
        "light gray",
        "light slate gray",
    ]


def test_equidistant_colours_resolve_to_the_alphabetically_first():
    # (64, 0, 0) is 64^2 from both black and maroon; (214, 135, 31) is as far from chocolate as from goldenrod
    assert colors.nearest_names([[64, 0, 0], [214, 135, 31]]).to_pylist() == ["black", "chocolate"]


def test_nan_rows_give_null_and_keep_their_place():
    got = colors.nearest_names(np.array([[np.nan, np.nan, np.nan], [255, 0, 0], [1, np.nan, 2]]))
    assert got.to_pylist() == [None, "red", None]
    assert colors.nearest_names(np.zeros((0, 3))).to_pylist() == []


def test_vectorised_result_equals_a_plain_loop_over_webcolors():
    points = np.random.default_rng(7).uniform(0, 255, size=(400, 3))
    words = yaml.safe_load(colors.WORDS_FILE.read_text())
    names = sorted(webcolors.names("css3"))

    def loop(p):
        best = min(names, key=lambda n: (sum((a - b) ** 2 for a, b in zip(p, webcolors.name_to_rgb(n))), n))
        return words[best]

    assert colors.nearest_names(points).to_pylist() == [loop(p) for p in points]
