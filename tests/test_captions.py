"""The shared caption-file policy (converters.helpers.captions) and the pickle safety of the caption datasets."""

import os
import pickle

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from common.arrays import normalise_text
from common.errors import UserError
from converters import convert
from converters.datasets.mm_celeba_hq import MMCelebAHQ
from converters.fixtures import mm_celeba_hq as mm_fixture
from converters.helpers.captions import caption_files, read_captions, read_split_pickle, stem_of
from converters.helpers.root import DatasetRoot


def read(tmp_path, files: dict, per_file: int = 3):
    folder = tmp_path / "text"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    conv = MMCelebAHQ(tmp_path)
    caps = read_captions(conv, folder, per_file)
    return conv, caps, dict(zip(caps.columns["source"].to_pylist(), caps.columns["text"].to_pylist()))


def test_a_record_is_a_non_empty_line_with_whitespace_normalised(tmp_path):
    conv, caps, texts = read(
        tmp_path,
        {
            "1.txt": b"\xef\xbb\xbfA  woman\twith\xc2\xa0bangs.  \r\n\r\n  \r\nShe smiles.\rNo final newline",
            "0.txt": b"\n\nA man.\n\n",
        },
    )
    assert texts == {
        "text/0.txt:3": "A man.",
        "text/1.txt:1": "A woman with\xa0bangs.",  # a no-break space is not collapsed, as in rows.normalise_text
        "text/1.txt:4": "She smiles.",
        "text/1.txt:5": "No final newline",
    }
    assert conv.records_in == 4 and not conv.rejects
    assert caps.stems.to_pylist() == ["0", "1"]
    assert caps.columns["file"].tolist() == [0, 1, 1, 1]
    assert conv.notes == ["1 caption files in text hold fewer than 3 captions (e.g. 0.txt)"]


def test_replacement_characters_kept_when_readable_rejected_when_not(tmp_path):
    conv, _, texts = read(
        tmp_path,
        {
            "0.txt": "The woman has long hair\ufffd\ufffdshe is smiling.\n".encode()
            + b"A man with a beard\xa3\xacglasses.\n"  # GBK bytes: not UTF-8
            + "\ufffd\ufffd\ufffd\ufffd\ufffd\ufffd ab\n".encode()
            + b"\xc4\xe3\xba\xc3\xca\xc0\xbd\xe7\n"  # a whole GBK sentence
            + b" . \n",
        },
    )
    assert texts == {
        "text/0.txt:1": "The woman has long hair she is smiling.",
        "text/0.txt:2": "A man with a beard glasses.",
    }
    assert [(r["source"], r["reason"]) for r in conv.rejects] == [
        ("text/0.txt:3", "undecodable text"),
        ("text/0.txt:4", "undecodable text"),
        ("text/0.txt:5", "empty caption"),
    ]
    assert conv.records_in == 5


def test_empty_files_and_hidden_files(tmp_path):
    files = {"0.txt": b"", "1.txt": b"\n \n", "._2.txt": b"\x00\x05junk", "2.txt": b"a\nb\nc\n"}
    conv, caps, texts = read(tmp_path, files)
    assert list(texts) == ["text/2.txt:1", "text/2.txt:2", "text/2.txt:3"]
    assert caps.stems.to_pylist() == ["0", "1", "2"]
    assert conv.records_in == 3
    assert conv.notes == ["2 caption files in text hold no caption (e.g. 0.txt)"]


def test_no_caption_files_is_a_user_error(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "README.md").write_text("captions")
    with pytest.raises(UserError, match=r"no \.txt caption files in .*text"):
        read_captions(MMCelebAHQ(tmp_path), tmp_path / "text", 10)


def test_files_are_read_in_numeric_order(tmp_path):
    for name in ("10.txt", "9.txt", "100.txt", "b.txt", "a.TXT", "notes.md"):
        (tmp_path / name).write_text("x\n")
    tree = DatasetRoot(tmp_path, "mm_celeba_hq")
    assert caption_files(tree, tmp_path) == ["9.txt", "10.txt", "100.txt", "a.TXT", "b.txt"]


def test_normalise_text_fast_path_matches_the_plain_regex():
    values = pa.array(["a  b", " a", "a ", "a\tb", "a b", "", "  ", "x\x0cy", "a\u3000 b", "\xa0a\xa0", "a\n\nb", "ok"])
    plain = pc.utf8_trim_whitespace(pc.replace_substring_regex(values, r"\s+", " "))
    assert normalise_text(values).to_pylist() == plain.to_pylist()


def test_stem_of_takes_the_basename_without_image_or_text_extension():
    names = pa.array(["../data/CelebAimg/12.jpg", "Image\\00012.PNG", "00037", "a/b/3.txt", "4.5"])
    assert stem_of(names).to_pylist() == ["12", "00012", "00037", "3", "4.5"]


def test_innermost_steps_through_wrapper_folders(tmp_path):
    (tmp_path / "text" / "celeba-caption").mkdir(parents=True)
    (tmp_path / "text" / ".DS_Store").mkdir()
    (tmp_path / "text" / "celeba-caption" / "0.txt").write_text("a\n")
    tree = DatasetRoot(tmp_path, "mm_celeba_hq")
    assert tree.innermost(tmp_path / "text", {".txt"}) == tmp_path / "text" / "celeba-caption"


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class ExploitInList:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_pickle_runs_nothing_and_is_a_user_error(tmp_path, protocol):
    root = tmp_path / "mm"
    mm_fixture.write_sample(root)
    marker = tmp_path / "pwned"
    pickle_path = root / "test" / "filenames.pickle"
    pickle_path.write_bytes(pickle.dumps(Exploit(marker), protocol=protocol))
    refused = r"test/filenames\.pickle: not a plain-data pickle \(refused to load posix\.system"
    with pytest.raises(UserError, match=refused):
        convert("mm_celeba_hq", root, tmp_path / "out")
    assert not marker.exists()
    assert not (tmp_path / "out" / "mm_celeba_hq.parquet").exists()


def test_malicious_item_inside_a_list_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps(["0", "1", ExploitInList(marker)], protocol=2))
    refused = r"filenames\.pickle: not a plain-data pickle \(refused to load (__builtin__|builtins)\.exec"
    with pytest.raises(UserError, match=refused):
        read_split_pickle(path)
    assert not marker.exists()


def test_split_pickles_of_other_shapes(tmp_path):
    path = tmp_path / "filenames.pickle"
    path.write_bytes(pickle.dumps([0, 24000, "12.jpg", b"7"], protocol=4))  # protocol 2 pickles py3 bytes via a global
    assert read_split_pickle(path).to_pylist() == ["0", "24000", "12", "7"]
    path.write_bytes(pickle.dumps({"train": ["0"]}))
    with pytest.raises(UserError, match=r"filenames\.pickle: expected a pickled list of file names, found dict"):
        read_split_pickle(path)
    path.write_bytes(pickle.dumps(["0", "1"])[:-3])
    with pytest.raises(UserError, match=r"filenames\.pickle: .*(truncated|unreadable)"):
        read_split_pickle(path)
