"""``python -m clipfit.data prepare`` on fabricated archives served from 127.0.0.1 or a folder (no internet).

Every address of ``sources.json`` is mapped onto a local server (``internet``): by default it
serves an empty folder, so every address is dead, as most were in 2021's list; a test gives it
the fabricated archives to serve. The fabricated files stand for the real ones: their
checksums replace the published ones (``publish``), in the same algorithm.
"""

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.parse
import zipfile

import pytest

import datasets  # noqa: F401  (registers the loaders)
from clipfit.data.prepare import download, errors, sources
from clipfit.data.prepare.cli import main
from clipfit.data.prepare.sources import FILES, SPECS, find_spec
from clipfit.data.splits import DatasetLayoutError
from clipfit.testing.fake_archives import ARCHIVES, COPIES, make_archives, write_archive
from clipfit.testing.http_server import FileServer
from tests._helpers import build

ALL = [spec.key for spec in SPECS]
DTD_ARCHIVE = "dtd-r1.0.1.tar.gz"
REAL_HTTP, REAL_GDRIVE, REAL_REQUIRE_GDOWN = download.http_download, download.gdrive_download, download.require_gdown


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """Every dataset's files, fabricated (2 classes, 16+ training images each), in one folder."""
    base = tmp_path_factory.mktemp("prepare")
    folder, expected = base / "mirror", base / "expected"
    for key in ALL:
        make_archives(key, str(folder), str(expected), n_classes=2, per_class=34)
    assert sorted(os.listdir(expected)) == sorted(s.folder for s in SPECS)
    return folder, expected


def address_path(url):
    """Where the ``internet`` server files an address: ``/<host><path>``."""
    if url.startswith(sources.GDRIVE):
        return f"/drive.google.com/{url[len(sources.GDRIVE):]}"
    parts = urllib.parse.urlsplit(url)
    return f"/{parts.hostname}{parts.path}"


@pytest.fixture(autouse=True)
def internet(monkeypatch, tmp_path_factory):
    """Every address (Google Drive's too) fetched from a server on 127.0.0.1, serving an empty folder."""
    with FileServer(str(tmp_path_factory.mktemp("internet"))) as server:

        def http(url, dest, *args, **kwargs):
            if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
                url = server.url + address_path(url)
            return REAL_HTTP(url, dest, *args, **kwargs)

        def drive(file_id, dest):
            # the server serves by file name; the id stays in the recorded path
            REAL_HTTP(f"{server.url}/drive.google.com/{file_id}/{os.path.basename(dest)}", dest, retries=0)

        monkeypatch.setattr(download, "http_download", http)
        monkeypatch.setattr(download, "gdrive_download", drive)
        monkeypatch.setattr(download, "require_gdown", lambda names: None)
        yield server


def publish(monkeypatch, folder):
    """Make the files in ``folder`` the ones ``sources.json`` describes: each published or recorded
    checksum is replaced by the file's, in the same algorithm."""
    for name, facts in FILES.items():
        path = os.path.join(folder, name)
        if facts.checksum and os.path.isfile(path):
            algorithm = facts.checksum.algorithm
            value = download.digests(path, [algorithm])[algorithm]
            checksum = dataclasses.replace(facts.checksum, value=value)
            monkeypatch.setitem(FILES, name, dataclasses.replace(facts, checksum=checksum))


@pytest.fixture(autouse=True)
def published(monkeypatch, mirror):
    publish(monkeypatch, mirror[0])


def prepare(capsys, *argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().out


def signature(root, key):
    """(split, label, class name, SHA-1 of the image) of every item the loader reads."""
    dataset = build(root, key)
    out = []
    for split in ("train_x", "val", "test"):
        for x in getattr(dataset, split) or []:
            with open(x.impath, "rb") as f:
                out.append((split, x.label, x.classname, hashlib.sha1(f.read()).hexdigest()))
    return sorted(out)


def tree(folder):
    """Every path below ``folder`` (relative), folders included."""
    return sorted(
        os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder) for n in dirs + files
    )


def first_addresses(key):
    """The address each file of dataset ``key`` is fetched from first (the maintained one where there is one)."""
    return {address_path(FILES[src.names[0]].addresses[0].url) for src in find_spec(key).sources}


def requested(server):
    """The requested paths, without the file name that Google Drive downloads add."""
    return {p.rsplit("/", 1)[0] if p.startswith("/drive.google.com/") else p for p in server.paths}


@pytest.mark.parametrize("key", [k for k in ALL if k != "imagenet"])
def test_each_dataset_from_its_first_addresses_to_its_loader(key, mirror, internet, tmp_path, capsys):
    folder, expected = mirror
    internet.serve(str(folder))
    root = tmp_path / "data"
    rc, out = prepare(capsys, key, "--root", root, "--skip-counts")
    assert rc == 0, out
    assert requested(internet) == first_addresses(key)  # nothing else: the first address served each file
    assert "doctor: ok" in out
    for src in find_spec(key).sources:
        checksum = FILES[src.names[0]].checksum
        if checksum:
            assert f"MD5 ok (published: {checksum.source})" in out
    assert os.listdir(root) == [find_spec(key).folder]  # nothing written beside the dataset folder
    assert signature(root, key) == signature(expected, key)
    leftovers = [p for p in tree(root) if ".download" in p or p.endswith(".tmp")]
    assert leftovers == []


def test_imagenet_from_a_mirror_server(mirror, tmp_path, capsys):
    """ImageNet's archives need a login: only a mirror serves them, checked against torchvision's MD5s."""
    folder, expected = mirror
    with FileServer(str(folder)) as server:
        rc, out = prepare(capsys, "imagenet", "--root", tmp_path, "--mirror", server.url, "--skip-counts")
    assert rc == 0, out
    assert out.count("MD5 ok (published: torchvision") == 3
    assert signature(tmp_path, "imagenet") == signature(expected, "imagenet")


def served_without(tmp_path, folder, *names):
    """A copy of ``folder`` without the files ``names`` (their addresses are dead)."""
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    for name in names:
        os.remove(served / name)
    return served


def test_caltech_from_the_maintained_zip_around_the_tarball(mirror, internet, tmp_path, capsys):
    folder, expected = mirror
    with zipfile.ZipFile(folder / "caltech-101.zip") as zf:  # the real nesting
        assert sorted(zf.namelist())[:1] == ["caltech-101/101_ObjectCategories.tar.gz"]
    internet.serve(str(served_without(tmp_path, folder, "101_ObjectCategories.tar.gz")))
    rc, out = prepare(capsys, "caltech101", "--root", tmp_path / "data", "--skip-counts")
    assert rc == 0, out
    assert "taking caltech-101/101_ObjectCategories.tar.gz out of caltech-101.zip" in out and "doctor: ok" in out
    assert signature(tmp_path / "data", "caltech101") == signature(expected, "caltech101")
    assert not os.path.exists(tmp_path / "data" / "caltech-101" / ".download")


def test_caltech_zip_downloaded_only_leaves_the_tarball_for_another_machine(mirror, internet, tmp_path, capsys):
    folder, expected = mirror
    internet.serve(str(folder))
    online = tmp_path / "online"
    rc, out = prepare(capsys, "caltech101", "--root", online, "--download-only")
    assert rc == 0, out
    downloads = online / "caltech-101" / ".download"
    assert sorted(os.listdir(downloads)) == ["101_ObjectCategories.tar.gz", "split_zhou_Caltech101.json"]
    n = len(internet.paths)
    rc, out = prepare(capsys, "caltech101", "--root", tmp_path / "offline", "--from-archives", online, "--skip-counts")
    assert rc == 0 and len(internet.paths) == n, out
    assert signature(tmp_path / "offline", "caltech101") == signature(expected, "caltech101")


def test_a_caltech_zip_without_the_tarball_is_an_error_naming_what_it_holds(
    mirror, internet, tmp_path, capsys, monkeypatch
):
    folder, _ = mirror
    served = served_without(tmp_path, folder, "caltech-101.zip")
    write_archive(str(served / "caltech-101.zip"), [("caltech-101/Annotations.tar", b"x")])
    publish(monkeypatch, served)  # a zip that passes its checksum, but is laid out otherwise
    internet.serve(str(served))
    rc, out = prepare(capsys, "caltech101", "--root", tmp_path / "data")
    assert rc == 1
    assert "does not hold caltech-101/101_ObjectCategories.tar.gz; its top entries are caltech-101" in out
    assert not os.path.exists(tmp_path / "data" / "caltech-101" / "101_ObjectCategories")


def test_caltech_falls_back_to_coop_address_when_the_maintained_one_is_dead(mirror, internet, tmp_path, capsys):
    folder, expected = mirror
    internet.serve(str(served_without(tmp_path, folder, "caltech-101.zip")))
    rc, out = prepare(capsys, "caltech101", "--root", tmp_path / "data", "--skip-counts")
    assert rc == 0, out
    zip_url, tar_url = (FILES[n].addresses[0].url for n in ("caltech-101.zip", "101_ObjectCategories.tar.gz"))
    order = [p for p in internet.paths if p.endswith((".zip", ".tar.gz"))]
    assert order == [address_path(zip_url), address_path(tar_url)]
    assert "HTTP 404" in out and "no checksum published or recorded for 101_ObjectCategories.tar.gz" in out
    assert signature(tmp_path / "data", "caltech101") == signature(expected, "caltech101")


def test_eurosat_from_the_later_release_with_another_folder_name(mirror, internet, tmp_path, capsys):
    """Both addresses of EuroSAT.zip dead: the authors' EuroSAT_RGB.zip (EuroSAT_RGB/) becomes 2750/."""
    folder, expected = mirror
    with zipfile.ZipFile(folder / "EuroSAT_RGB.zip") as zf:
        assert {n.split("/")[0] for n in zf.namelist()} == {"EuroSAT_RGB"}
    internet.serve(str(served_without(tmp_path, folder, "EuroSAT.zip")))
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path / "data", "--skip-counts")
    assert rc == 0, out
    tried = [p for p in internet.paths if p.endswith(".zip")]
    assert tried == [address_path(a.url) for n in ("EuroSAT.zip", "EuroSAT_RGB.zip") for a in FILES[n].addresses]
    assert sorted(os.listdir(tmp_path / "data" / "eurosat")) == ["2750", "split_zhou_EuroSAT.json"]
    assert "doctor: ok" in out
    assert signature(tmp_path / "data", "eurosat") == signature(expected, "eurosat")


def test_the_mirror_comes_after_every_address(mirror, internet, tmp_path, capsys):
    folder, expected = mirror
    with FileServer(str(folder)) as server:  # the internet serves nothing
        rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", server.url, "--skip-counts")
    assert rc == 0, out
    dtd = FILES[DTD_ARCHIVE].addresses
    assert [p for p in internet.paths if p.endswith(".tar.gz")] == [address_path(a.url) for a in dtd]
    assert [name for name, _ in server.requests] == [DTD_ARCHIVE, "split_zhou_DescribableTextures.json"]
    assert signature(tmp_path, "dtd") == signature(expected, "dtd")


def test_a_file_no_address_serves_names_every_address_tried(internet, tmp_path, capsys):
    rc, out = prepare(capsys, "stanford_cars", "--root", tmp_path)
    assert rc == 1
    error = out.split("ERROR: ")[1]
    assert "Could not get cars_train.tgz" in error and "--mirror" in error and 'section "StanfordCars"' in error
    assert "from http://ai.stanford.edu/~jkrause/car196/cars_train.tgz (see above)" in error


def test_a_wrong_md5_from_the_maintained_address_stops_before_extraction(mirror, internet, tmp_path, capsys):
    folder, _ = mirror
    served = served_without(tmp_path, folder)
    good = (served / DTD_ARCHIVE).read_bytes()
    (served / DTD_ARCHIVE).write_bytes(good[:-10] + b"0123456789")  # same size, other bytes
    internet.serve(str(served))
    root = tmp_path / "data"
    rc, out = prepare(capsys, "dtd", "--root", root)
    assert rc == 1
    error = out.split("ERROR: ")[1]
    expected_md5 = FILES[DTD_ARCHIVE].checksum.value
    actual_md5 = hashlib.md5((served / DTD_ARCHIVE).read_bytes()).hexdigest()
    assert f"wrong checksum for {DTD_ARCHIVE}" in error and FILES[DTD_ARCHIVE].addresses[0].url in error
    assert f"MD5 {actual_md5}, expected {expected_md5} (published: torchvision 0.29 datasets/dtd.py" in error
    assert "It was deleted, and nothing was extracted" in error
    assert os.listdir(root / "dtd" / ".download") == []  # the partial file is gone, nothing else came
    assert sorted(os.listdir(root / "dtd")) == [".download"]
    assert len([p for p in internet.paths if p.endswith(DTD_ARCHIVE)]) == 1  # no other address after a mismatch


def test_archive_extras_follow_coop_renames(mirror, tmp_path, capsys):
    """Food-101's top folder is stripped (its README kept); of FGVC's archive only data/ is kept."""
    folder, _ = mirror
    rc, out = prepare(capsys, "food101", "fgvc_aircraft", "--root", tmp_path, "--mirror", folder, "--skip-counts")
    assert rc == 0, out
    assert os.path.isfile(tmp_path / "food-101" / "README.txt")
    assert os.path.isfile(tmp_path / "fgvc_aircraft" / "families.txt")
    assert not os.path.exists(tmp_path / "fgvc_aircraft" / "README.html")


def test_imagenet_validation_images_are_sorted_by_the_devkit_labels(mirror, tmp_path, capsys):
    folder, expected = mirror
    rc, out = prepare(capsys, "imagenet", "--root", tmp_path, "--from-archives", folder, "--skip-counts")
    assert rc == 0, out
    val = tmp_path / "imagenet" / "images" / "val"
    assert sorted(os.listdir(val)) == sorted(os.listdir(expected / "imagenet" / "images" / "val"))
    assert all(name.startswith("ILSVRC2012_val_") for wnid in os.listdir(val) for name in os.listdir(val / wnid))


def test_imagenet_extracted_by_hand_is_finished_in_place(mirror, tmp_path, capsys):
    """The outer train tar extracted into images/train (class tars) and the val tar into images/val (flat)."""
    folder, expected = mirror
    imagenet = tmp_path / "data" / "imagenet"
    imagenet.mkdir(parents=True)
    shutil.copy(expected / "imagenet" / "classnames.txt", imagenet)
    for archive, into in (("ILSVRC2012_img_train.tar", "train"), ("ILSVRC2012_img_val.tar", "val")):
        with tarfile.open(folder / archive) as tf:  # what `tar xf` gives
            tf.extractall(imagenet / "images" / into, filter="data")
    assert sorted(os.listdir(imagenet / "images" / "train"))[0].endswith(".tar")
    archives = tmp_path / "archives"  # the devkit only
    archives.mkdir()
    shutil.copy(folder / "ILSVRC2012_devkit_t12.tar.gz", archives)
    rc, out = prepare(capsys, "--list", "--root", tmp_path / "data")
    assert [line.split()[2] for line in out.splitlines() if line.startswith("imagenet ")] == ["partial"]
    rc, out = prepare(capsys, "imagenet", "--root", tmp_path / "data", "--from-archives", archives, "--skip-counts")
    assert rc == 0, out
    assert signature(tmp_path / "data", "imagenet") == signature(expected, "imagenet")
    assert sorted(os.listdir(imagenet / "images")) == ["train", "train.tars", "val"]  # the user's tars are kept
    assert "delete that folder" in out


def test_a_folder_mirror_from_the_environment_variable(mirror, tmp_path, capsys, monkeypatch):
    folder, expected = mirror
    monkeypatch.setenv(download.MIRROR_ENV, str(folder))
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path, "--skip-counts")
    assert rc == 0, out
    assert "downloading" not in out
    assert signature(tmp_path, "eurosat") == signature(expected, "eurosat")
    assert sorted(os.listdir(folder)) == sorted(  # the mirror is read, never changed
        {n for k in ALL if k != "imagenet" for n in ARCHIVES[k]}
        | {n for copies in COPIES.values() for n in copies}
        | {"ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"}
    )


def test_a_file_missing_from_a_folder_mirror_and_every_address_is_named(tmp_path, capsys):
    (tmp_path / "mirror").mkdir()
    rc, out = prepare(capsys, "dtd", "--root", tmp_path / "data", "--mirror", tmp_path / "mirror")
    assert rc == 1
    url = FILES[DTD_ARCHIVE].addresses[0].url
    assert f"Could not get {DTD_ARCHIVE} from the mirror folder {tmp_path / 'mirror'}, {url} (see above)" in out
    assert not os.path.exists(tmp_path / "data" / "dtd" / ".download" / (DTD_ARCHIVE + ".part"))  # nothing came


def test_resume_after_a_cut_connection_in_the_next_run(mirror, tmp_path, capsys):
    folder, expected = mirror
    size = os.path.getsize(folder / DTD_ARCHIVE)
    root = tmp_path / "data"
    with FileServer(str(folder), cut_after={DTD_ARCHIVE: 1000}) as server:
        rc, out = prepare(capsys, "dtd", "--root", root, "--mirror", server.url, "--retries", "0", "--skip-counts")
        assert rc == 1 and "run the same command again to resume" in out
        part = root / "dtd" / ".download" / (DTD_ARCHIVE + ".part")
        assert os.path.getsize(part) == 1000
        with pytest.raises(DatasetLayoutError):  # nothing a loader accepts
            build(root, "dtd")
        rc, out = prepare(capsys, "dtd", "--root", root, "--mirror", server.url, "--retries", "0", "--skip-counts")
    assert rc == 0, out
    dtd_requests = [r for name, r in server.requests if name == DTD_ARCHIVE]
    assert dtd_requests == [None, "bytes=1000-"]
    assert size > 1000
    assert signature(root, "dtd") == signature(expected, "dtd")


def test_resume_within_one_run(mirror, tmp_path, capsys, monkeypatch):
    folder, _ = mirror
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)
    with FileServer(str(folder), cut_after={DTD_ARCHIVE: 700}) as server:
        rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", server.url, "--skip-counts")
    assert rc == 0, out
    assert "connection lost at 700 bytes" in out
    assert [r for name, r in server.requests if name == DTD_ARCHIVE] == [None, "bytes=700-"]


def test_a_wrong_hash_is_refused_and_the_download_deleted(mirror, tmp_path, capsys):
    folder, _ = mirror
    sums = tmp_path / "sums.json"
    sums.write_text(json.dumps({DTD_ARCHIVE: "0" * 64}))
    root = tmp_path / "data"
    with FileServer(str(folder)) as server:
        rc, out = prepare(capsys, "dtd", "--root", root, "--mirror", server.url, "--checksums", sums)
    assert rc == 1
    assert "wrong checksum" in out and "0" * 64 in out and DTD_ARCHIVE in out
    assert not os.path.exists(root / "dtd" / ".download" / DTD_ARCHIVE)
    assert not os.path.exists(root / "dtd" / "images")


def test_a_right_hash_passes_and_a_missing_one_is_printed_with_how_to_record_it(mirror, tmp_path, capsys):
    folder, _ = mirror
    digest = hashlib.sha256((folder / DTD_ARCHIVE).read_bytes()).hexdigest()
    sums = tmp_path / "sums.json"
    sums.write_text(json.dumps({DTD_ARCHIVE: digest}))
    rc, out = prepare(capsys, "dtd", "--root", tmp_path / "d", "--mirror", folder, "--checksums", sums, "--skip-counts")
    assert rc == 0, out
    split = folder / "split_zhou_DescribableTextures.json"
    split_digest = hashlib.sha256(split.read_bytes()).hexdigest()
    assert f"SHA-256 ok (recorded: --checksums {sums})" in out and "MD5 ok (published: torchvision" in out
    hint = out.split("No checksum is published or recorded for 1 file(s)")[1]
    assert f'"split_zhou_DescribableTextures.json": "{split_digest}"' in hint
    assert DTD_ARCHIVE not in hint and "sources.json" in hint


def malicious_members():
    """(member name, tar entry maker) of members that would escape the dataset folder."""

    def link(name, target, kind=tarfile.SYMTYPE):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        return info

    return {
        "dtd/../escaped.txt": None,
        "/tmp/absolute.txt": None,
        "dtd/images/evil": link("dtd/images/evil", "../../../outside"),
        "dtd/images/abs": link("dtd/images/abs", "/etc/passwd"),
        "dtd/images/hard": link("dtd/images/hard", "../x", tarfile.LNKTYPE),
    }


def rewrite_dtd_archive(mirror, extra):
    """Re-write the fabricated DTD archive with the tar entries ``extra`` (TarInfo, data) appended."""
    path = mirror / DTD_ARCHIVE
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf.getmembers()]
    with tarfile.open(path, "w:gz") as tf:
        for m, data in members + list(extra):
            tf.addfile(m, io.BytesIO(data) if data is not None else None)


def assert_refused(tmp_path, root, out, bad):
    assert "Refusing" in out and repr(bad) in out
    assert sorted(os.listdir(tmp_path)) == ["data", "expected", "mirror"]  # nothing written beside DATA
    assert os.listdir(root) == ["dtd"]
    assert not any(p.startswith("images") or p.endswith(".tmp") for p in tree(root / "dtd")), tree(root / "dtd")


@pytest.mark.parametrize("bad", list(malicious_members()))
def test_a_malicious_tar_member_is_refused_and_named(bad, tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    make_archives("dtd", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=4)
    entry = malicious_members()[bad]
    if entry is None:
        entry = tarfile.TarInfo(bad)
        entry.size = 4
    rewrite_dtd_archive(mirror, [(entry, b"evil" if entry.isfile() else None)])
    publish(monkeypatch, mirror)  # the checksum is no defence when upstream was compromised
    root = tmp_path / "data"
    rc, out = prepare(capsys, "dtd", "--root", root, "--mirror", mirror)
    assert rc == 1
    assert_refused(tmp_path, root, out, bad)


def test_a_link_that_escapes_through_another_link_is_refused(tmp_path, capsys, monkeypatch):
    """Each link alone stays inside; followed on disk, the second one leaves the folder."""
    mirror = tmp_path / "mirror"
    make_archives("dtd", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=4)
    links = []
    for name, target in (("dtd/images/a", "../.."), ("dtd/images/b", "a/../../..")):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = tarfile.SYMTYPE, target
        links.append((info, None))
    rewrite_dtd_archive(mirror, links)
    publish(monkeypatch, mirror)
    root = tmp_path / "data"
    rc, out = prepare(capsys, "dtd", "--root", root, "--mirror", mirror)
    assert rc == 1
    assert_refused(tmp_path, root, out, "dtd/images/b")


def test_a_truncated_archive_without_a_checksum_is_deleted_and_fetched_again(mirror, tmp_path, capsys):
    folder, expected = mirror
    archive = "fgvc-aircraft-2013b.tar.gz"  # upstream publishes no checksum for it
    served = served_without(tmp_path, folder)
    good = (served / archive).read_bytes()
    (served / archive).write_bytes(good[: len(good) // 2])
    root = tmp_path / "data"
    with FileServer(str(served)) as server:
        rc, out = prepare(capsys, "fgvc_aircraft", "--root", root, "--mirror", server.url)
        assert rc == 1 and "damaged or truncated" in out and "It was deleted" in out
        assert not os.path.exists(root / "fgvc_aircraft" / ".download" / archive)
        (served / archive).write_bytes(good)
        rc, out = prepare(capsys, "fgvc_aircraft", "--root", root, "--mirror", server.url, "--skip-counts")
    assert rc == 0, out
    assert signature(root, "fgvc_aircraft") == signature(expected, "fgvc_aircraft")


def test_a_eurosat_zip_with_the_later_folder_name_is_renamed_to_2750(tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    make_archives("eurosat", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=34)
    with zipfile.ZipFile(mirror / "EuroSAT.zip") as zf:
        entries = [(name.replace("2750/", "EuroSAT_RGB/", 1), zf.read(name)) for name in zf.namelist()]
    write_archive(str(mirror / "EuroSAT.zip"), entries)
    publish(monkeypatch, mirror)
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path / "data", "--mirror", mirror, "--skip-counts")
    assert rc == 0, out
    assert signature(tmp_path / "data", "eurosat") == signature(tmp_path / "expected", "eurosat")


def test_a_malicious_zip_member_is_refused(tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    make_archives("eurosat", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=4)
    with zipfile.ZipFile(mirror / "EuroSAT.zip", "a") as zf:
        zf.writestr("2750/../../outside.txt", b"evil")
    publish(monkeypatch, mirror)
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path / "data", "--mirror", mirror)
    assert rc == 1 and "'2750/../../outside.txt' (path with '..')" in out
    assert not os.path.exists(tmp_path / "data" / "eurosat" / "2750")


def test_an_unexpected_archive_layout_is_an_error(tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    make_archives("dtd", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=4)
    write_archive(str(mirror / DTD_ARCHIVE), [("other/images/a.jpg", b"x")])
    publish(monkeypatch, mirror)
    rc, out = prepare(capsys, "dtd", "--root", tmp_path / "data", "--mirror", mirror)
    assert rc == 1 and "not the archive expected" in out and "other" in out


def test_an_interrupted_extraction_leaves_nothing_a_loader_accepts(mirror, tmp_path, capsys, monkeypatch):
    folder, expected = mirror
    from clipfit.data.prepare import layout

    real_rename = os.rename
    calls = []

    def failing_rename(src, dst):
        calls.append(dst)
        if os.path.basename(dst) == "images":
            raise KeyboardInterrupt  # the user presses Ctrl-C just before the image folder lands
        real_rename(src, dst)

    monkeypatch.setattr(layout.os, "rename", failing_rename)
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder)
    assert rc == 130 and "Interrupted during dtd" in out
    monkeypatch.setattr(layout.os, "rename", real_rename)
    with pytest.raises(DatasetLayoutError):
        build(tmp_path, "dtd")
    assert not [p for p in tree(tmp_path / "dtd") if p.endswith(".tmp")]  # the work folder was removed
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder, "--skip-counts")
    assert rc == 0, out
    assert signature(tmp_path, "dtd") == signature(expected, "dtd")


def test_a_rerun_on_a_complete_folder_does_nothing(mirror, tmp_path, capsys):
    folder, _ = mirror
    with FileServer(str(folder)) as server:
        assert prepare(capsys, "oxford_pets", "--root", tmp_path, "--mirror", server.url, "--skip-counts")[0] == 0
        before = {p: os.stat(tmp_path / p).st_mtime_ns for p in tree(tmp_path)}
        n = len(server.requests)
        rc, out = prepare(capsys, "oxford_pets", "--root", tmp_path, "--mirror", server.url, "--skip-counts")
    assert rc == 0 and "complete: nothing to download or extract" in out
    assert len(server.requests) == n
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in tree(tmp_path)} == before


def test_a_rerun_fetches_only_what_is_missing(mirror, tmp_path, capsys):
    folder, _ = mirror
    with FileServer(str(folder)) as server:
        assert prepare(capsys, "oxford_pets", "--root", tmp_path, "--mirror", server.url, "--skip-counts")[0] == 0
        os.remove(tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json")
        n = len(server.requests)
        rc, out = prepare(capsys, "oxford_pets", "--root", tmp_path, "--mirror", server.url, "--skip-counts")
    assert rc == 0, out
    assert [name for name, _ in server.requests[n:]] == ["split_zhou_OxfordPets.json"]


def test_download_only_then_extract_from_the_archives_elsewhere(mirror, tmp_path, capsys):
    folder, expected = mirror
    first = tmp_path / "online"
    with FileServer(str(folder)) as server:
        rc, out = prepare(capsys, "dtd", "--root", first, "--mirror", server.url, "--download-only")
    assert rc == 0, out
    assert sorted(os.listdir(first / "dtd" / ".download")) == sorted(ARCHIVES["dtd"])
    assert not os.path.exists(first / "dtd" / "images")
    second = tmp_path / "offline"
    rc, out = prepare(capsys, "dtd", "--root", second, "--from-archives", first, "--skip-counts")
    assert rc == 0, out
    assert signature(second, "dtd") == signature(expected, "dtd")
    assert sorted(os.listdir(first / "dtd" / ".download")) == sorted(ARCHIVES["dtd"])  # the source is left alone


def test_from_archives_never_downloads_and_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "archives").mkdir()
    rc, out = prepare(capsys, "caltech101", "--root", tmp_path / "data", "--from-archives", tmp_path / "archives")
    assert rc == 1 and "101_ObjectCategories.tar.gz is not in" in out


def test_not_enough_disk_space_is_an_error_with_the_size_needed(mirror, tmp_path, capsys, monkeypatch):
    folder, _ = mirror

    class Usage:
        free = 10

    monkeypatch.setattr(errors.shutil, "disk_usage", lambda path: Usage)
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder)
    assert rc == 1 and "Not enough disk space" in out and "bytes) needed, 10 B free" in out
    assert not os.path.exists(tmp_path / "dtd" / "images")


def test_dry_run_lists_every_file_its_addresses_and_checksum_and_writes_nothing(tmp_path, capsys):
    rc, out = prepare(capsys, "all", "--root", tmp_path / "data", "--dry-run")
    assert rc == 0
    assert not os.path.exists(tmp_path / "data")
    blocks = {}  # (dataset, file) -> its lines
    for section in out.split("== ")[1:]:
        for block in re.split(r"\n  (?=\S)", section)[1:]:
            blocks[section.split()[0], block.split(" (")[0]] = block
    assert "ILSVRC2012_img_train.tar" not in out  # all = what can be downloaded
    for spec in sources.downloadable():
        for src in spec.sources:
            block = blocks[spec.key, src.name]
            for name in src.names:
                for address in RECORDED[name].addresses:
                    assert download.display(address.url) in block and address.source in block, name
                checksum = FILES[name].checksum  # what this run checks against
                assert (f"MD5 {checksum.value} (published: {checksum.source})" if checksum
                        else "no published checksum") in block, name
    caltech = blocks["caltech101", "101_ObjectCategories.tar.gz"]
    assert caltech.index("caltech-101.zip") < caltech.index("vision.caltech.edu")  # maintained first


def test_dry_run_names_what_is_found_and_the_mirror_last(mirror, tmp_path, capsys):
    folder, _ = mirror
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", "http://mirror.example/data", "--dry-run")
    assert out.index(FILES[DTD_ARCHIVE].addresses[0].url) < out.index(f"http://mirror.example/data/{DTD_ARCHIVE}")
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--from-archives", folder, "--dry-run")
    assert f"extract from {folder / DTD_ARCHIVE}" in out and "https://" not in out

def list_status(out):
    """Dataset -> (status, loader can use it) from the --list table."""
    rows = [line.split() for line in out.splitlines()[2:] if line[:1].strip()]
    return {r[0]: (r[2], r[3]) for r in rows if r[0] in {s.key for s in SPECS}}


def test_list_reports_each_entry_by_what_is_there(mirror, tmp_path, capsys):
    folder, _ = mirror
    assert prepare(capsys, "dtd", "oxford_pets", "--root", tmp_path, "--mirror", folder, "--skip-counts")[0] == 0
    for entry in ("imdb", "labels"):  # never read by the loader
        shutil.rmtree(tmp_path / "dtd" / entry)
    shutil.rmtree(tmp_path / "oxford_pets" / "images")
    (tmp_path / "eurosat").mkdir()
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text("{}")
    rc, out = prepare(capsys, "--list", "--root", tmp_path)
    assert rc == 0 and max(len(line) for line in out.splitlines()) <= 100, out
    status = list_status(out)
    assert len(status) == len(SPECS)
    assert status["dtd"] == ("usable", "yes") and status["oxford_pets"] == ("partial", "no")
    assert status["eurosat"] == ("partial", "no") and status["food101"] == ("missing", "no")
    rc, out = prepare(capsys, "--list", "--root", tmp_path, "--format", "json")
    records = {r["Dataset"]: r for r in json.loads(out)}
    assert records["dtd"]["Present"] == ["images", "split_zhou_DescribableTextures.json"]
    assert records["dtd"]["Absent"] == ["imdb (not read)", "labels (not read)"]
    assert records["oxford_pets"]["Absent"] == ["images"] and records["oxford_pets"]["Loader can use it"] == "no"
    build(tmp_path, "dtd")  # what --list calls usable, the loader reads
    assert prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder, "--skip-counts")[0] == 0
    assert list_status(prepare(capsys, "--list", "dtd", "--root", tmp_path)[1]) == {"dtd": ("complete", "yes")}


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_list_in_full_width_formats(fmt, tmp_path, capsys):
    rc, out = prepare(capsys, "--list", "--root", tmp_path, "--format", fmt)
    header = out.splitlines()[0]
    for column in ("Dataset", "Folder", "Status", "Loader can use it", "Present", "To finish", "Absent", "Note"):
        assert column in header
    assert len(out.splitlines()) == len(SPECS) + (2 if fmt == "md" else 1)


def test_list_defaults_to_the_data_variable_then_to_data(tmp_path, capsys, monkeypatch):
    (tmp_path / "env" / "eurosat" / "2750").mkdir(parents=True)
    (tmp_path / "data" / "dtd" / "images").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA", str(tmp_path / "env"))
    out = prepare(capsys, "--list")[1]
    assert list_status(out)["eurosat"][0] == "partial" and list_status(out)["dtd"][0] == "missing"
    assert f"Data root: {tmp_path / 'env'} ($DATA)." in out
    monkeypatch.delenv("DATA")
    out = prepare(capsys, "--list")[1]
    assert list_status(out)["eurosat"][0] == "missing" and list_status(out)["dtd"][0] == "partial"
    assert f"Data root: {tmp_path / 'data'} (the default ./data)." in out


@pytest.mark.parametrize("key", ALL)
def test_what_the_registry_says_the_loader_reads_is_enough(key, tmp_path):
    """With only the entries of ``reads`` (and the split), each loader gives the same dataset."""
    from clipfit.testing.fake_datasets import make_dataset

    spec = find_spec(key)
    full, only = tmp_path / "full", tmp_path / "only"
    make_dataset(key, str(full), n_classes=2, per_class=4)
    for entry in spec.reads:
        source, target = full / spec.folder / entry, only / spec.folder / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    assert signature(only, key) == signature(full, key)


def test_imagenet_without_its_archives_prints_the_steps_and_does_the_rest(mirror, tmp_path, capsys):
    folder, _ = mirror
    only_classnames = tmp_path / "m"
    only_classnames.mkdir()
    (only_classnames / "classnames.txt").write_bytes((folder / "classnames.txt").read_bytes())
    root = tmp_path / "data"
    rc, out = prepare(capsys, "imagenet", "--root", root, "--mirror", only_classnames)
    assert rc == 1
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"):
        assert name in out
    assert "image-net.org" in out and str(root / "imagenet" / ".download") in out
    assert os.path.isfile(root / "imagenet" / "classnames.txt")


def test_google_drive_files_need_gdown_named_before_anything_is_downloaded(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown fails

    def no_network(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(download, "http_download", no_network)
    monkeypatch.setattr(download, "require_gdown", REAL_REQUIRE_GDOWN)
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path)  # no mirror: the official addresses
    assert rc == 1
    assert "split_zhou_EuroSAT.json is on Google Drive" in out and "pip install gdown" in out
    assert not os.path.exists(tmp_path / "eurosat" / ".download")
    with pytest.raises(download.PrepareError, match="pip install gdown"):
        REAL_GDRIVE("someid", str(tmp_path / "x" / "f.json"))


def test_google_drive_files_go_through_gdown_with_resume(tmp_path, monkeypatch):
    calls = []

    class FakeGdown:
        @staticmethod
        def download(url, output, quiet, resume):
            calls.append((url, resume))
            with open(output, "w") as f:
                f.write("{}")
            return output

    monkeypatch.setitem(sys.modules, "gdown", FakeGdown)
    monkeypatch.setattr(download, "require_gdown", REAL_REQUIRE_GDOWN)
    dest = tmp_path / "d" / "split.json"
    REAL_GDRIVE("abc123", str(dest))
    assert calls == [("https://drive.google.com/uc?id=abc123", True)] and dest.read_text() == "{}"


def test_the_module_command_and_an_unknown_dataset(tmp_path):
    run = [sys.executable, "-m", "clipfit.data", "prepare"]
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    ok = subprocess.run(run + ["dtd", "--root", str(tmp_path), "--dry-run"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and DTD_ARCHIVE in ok.stdout and not os.listdir(tmp_path)
    bad = subprocess.run(run + ["dtdd", "--root", str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "Unknown dataset 'dtdd'. Did you mean dtd?" in bad.stderr
    assert "oxford_pets" in bad.stderr


def test_the_registry_matches_the_loaders_and_their_configs():
    """Each dataset's folder, section, image folder and split file are the ones its loader reads."""
    import yaml

    from clipfit.engine import DATASET_REGISTRY

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for spec in SPECS:
        with open(os.path.join(repo, "configs", "datasets", f"{spec.key}.yaml")) as f:
            assert yaml.safe_load(f)["DATASET"]["NAME"] == spec.registry
        loader = DATASET_REGISTRY.get(spec.registry)
        assert (loader.dataset_dir, loader.doc_section) == (spec.folder, spec.section)
        provided = {p.split("/")[0] for src in spec.sources for p in src.provides}
        assert loader.image_folder == "" or loader.image_folder in provided, spec.key
        assert getattr(loader, "split_file", "") in provided | {""}, spec.key
    configs = {name[: -len(".yaml")] for name in os.listdir(os.path.join(repo, "configs", "datasets"))}
    toy = {name for name in configs if name.startswith("toy_")}  # drawn by python -m clipfit.toyworld make-data
    assert toy and configs - {"image_folder", "csv_dataset"} - toy == {s.key for s in SPECS}  # every CoOp dataset


def test_imagenet_does_what_it_can_and_keeps_the_files_still_needed(mirror, tmp_path, capsys):
    folder, expected = mirror
    downloads = tmp_path / "imagenet" / ".download"
    downloads.mkdir(parents=True)
    for name in ("classnames.txt", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        shutil.copy(folder / name, downloads)  # put there by hand; the devkit is missing
    rc, out = prepare(capsys, "imagenet", "--root", tmp_path)
    assert rc == 1
    steps = out.split("To finish it:")[1]
    assert "ILSVRC2012_devkit_t12.tar.gz" in steps and "ILSVRC2012_img_val.tar (" not in steps
    assert sorted(os.listdir(tmp_path / "imagenet" / "images")) == ["train"]
    assert sorted(os.listdir(downloads)) == ["ILSVRC2012_img_val.tar"]  # still needed: kept
    shutil.copy(folder / "ILSVRC2012_devkit_t12.tar.gz", downloads)
    rc, out = prepare(capsys, "imagenet", "--root", tmp_path, "--skip-counts")
    assert rc == 0, out
    assert signature(tmp_path, "imagenet") == signature(expected, "imagenet")
    assert not os.path.exists(downloads)


def test_a_file_missing_from_a_mirror_server_is_an_error_naming_the_address(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with FileServer(str(tmp_path / "empty")) as server:
        rc, out = prepare(capsys, "eurosat", "--root", tmp_path / "data", "--mirror", server.url)
    assert rc == 1 and f"{server.url}/EuroSAT.zip answered HTTP 404" in out
    assert f"{server.url}/EuroSAT_RGB.zip answered HTTP 404" in out
    assert [name for name, _ in server.requests] == ["EuroSAT.zip", "EuroSAT_RGB.zip"]  # each once: not retried


def test_a_work_folder_left_by_a_killed_run_is_removed(mirror, tmp_path, capsys):
    folder, _ = mirror
    assert prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder, "--skip-counts")[0] == 0
    leftover = tmp_path / "dtd" / f".{DTD_ARCHIVE}.extract.tmp"
    (leftover / "images").mkdir(parents=True)  # as after kill -9 during the clean-up
    rc, out = prepare(capsys, "dtd", "--root", tmp_path, "--mirror", folder, "--skip-counts")
    assert rc == 0 and "doctor: ok" in out, out
    assert not os.path.exists(leftover)


def test_a_web_page_instead_of_a_split_file_is_refused_and_deleted(mirror, tmp_path, capsys):
    folder, _ = mirror
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    (served / "split_zhou_EuroSAT.json").write_text("<!DOCTYPE html><html>Quota exceeded</html>")
    root = tmp_path / "data"
    with FileServer(str(served)) as server:
        rc, out = prepare(capsys, "eurosat", "--root", root, "--mirror", server.url)
    assert rc == 1 and "is not the JSON object split_zhou_EuroSAT.json should be" in out and "<!DOCTYPE" in out
    assert not os.path.exists(root / "eurosat" / "split_zhou_EuroSAT.json")
    assert not os.path.exists(root / "eurosat" / ".download" / "split_zhou_EuroSAT.json")


def test_a_zip_member_with_a_bad_crc_is_a_damaged_archive(tmp_path, capsys, monkeypatch):
    mirror = tmp_path / "mirror"
    make_archives("eurosat", str(mirror), str(tmp_path / "expected"), n_classes=2, per_class=4)
    path = mirror / "EuroSAT.zip"
    with zipfile.ZipFile(path) as zf:
        info = [i for i in zf.infolist() if i.filename.endswith(".jpg")][0]
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 10] ^= 0xFF  # one byte of the stored image
    path.write_bytes(bytes(data))
    publish(monkeypatch, mirror)  # damaged before its checksum was taken: only the zip's own CRC tells
    rc, out = prepare(capsys, "eurosat", "--root", tmp_path / "data", "--mirror", mirror)
    assert rc == 1 and "damaged or truncated" in out and "Replace it with a good copy" in out
    assert not os.path.exists(tmp_path / "data" / "eurosat" / "2750")


def torchvision_downloads(class_name, root):
    """(url, md5) of every file torchvision's dataset class ``class_name`` downloads, recorded by
    running its download with the fetching functions replaced."""
    import importlib
    import inspect

    import torchvision.datasets as tv
    from torchvision.datasets import utils

    cls = getattr(tv, class_name)
    module = importlib.import_module(cls.__module__)
    seen = []

    def recorder(real):
        def record(*args, **kwargs):
            bound = inspect.signature(real).bind(*args, **kwargs)
            seen.append((bound.arguments["url"], bound.arguments.get("md5")))

        return record

    for name in ("download_and_extract_archive", "download_url"):
        if hasattr(module, name):
            setattr(module, name, recorder(getattr(utils, name)))
    try:
        cls(str(root), download=True)
    except Exception:  # nothing was fetched, so the class fails after recording what it wanted
        pass
    finally:
        importlib.reload(module)
    return seen


RECORDED = sources.load_files()  # as sources.json has them (the tests' FILES stand for fabricated files)
TORCHVISION_FILES = sorted({(n, f.torchvision) for n, f in RECORDED.items() if f.torchvision})


@pytest.mark.parametrize("name, class_name", TORCHVISION_FILES)
def test_recorded_addresses_and_checksums_match_the_installed_torchvision(name, class_name, tmp_path):
    facts = RECORDED[name]
    if class_name == "ImageNet":  # behind a login: torchvision has the archives' MD5s, no address
        from torchvision.datasets.imagenet import ARCHIVE_META

        assert (name, facts.checksum.value) in ARCHIVE_META.values()
        return
    downloads = torchvision_downloads(class_name, tmp_path)
    assert downloads, f"torchvision's {class_name} no longer downloads anything"
    md5 = facts.checksum.value if facts.checksum else None
    # the maintained address is the one tried first
    assert (facts.addresses[0].url, md5) in downloads, f"{name}: torchvision {class_name} now downloads {downloads}"
    assert facts.addresses[0].source.startswith("torchvision")


def test_every_dataset_torchvision_can_download_is_compared():
    assert {c for _, c in TORCHVISION_FILES} == {
        "DTD", "Food101", "Flowers102", "OxfordIIITPet", "EuroSAT", "Caltech101", "SUN397", "FGVCAircraft", "ImageNet"
    }


def test_the_sources_table_in_datasets_md_is_the_one_the_command_prints(capsys):
    """DATASETS.md shows `prepare --sources --format md` verbatim, so it cannot drift from sources.json."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, "DATASETS.md")) as f:
        text = f.read()
    # the block markers of clipfit.docs_blocks (read_block / write_block)
    block = text.split("<!-- begin: prepare-sources -->")[1].split("<!-- end: prepare-sources -->")[0]
    rc, out = prepare(capsys, "--sources", "--format", "md")
    assert rc == 0
    assert block.strip("\n") == out.strip("\n"), "run `python -m clipfit.data prepare --sources --format md` and paste it into DATASETS.md"
    for name, facts in RECORDED.items():
        checksum = facts.checksum
        expected = f"{'MD5 (published' if checksum.algorithm == 'md5' else 'SHA-256 (recorded'}: {checksum.source}" \
            if checksum else "| none "
        rows = [line for line in out.splitlines() if f"| {name} " in line or f"| {name} (holds" in line]
        uses = sum(name in src.names for spec in SPECS for src in spec.sources)
        assert len(rows) == len(facts.addresses) * uses, name
        assert all(expected in row for row in rows), name


def test_sources_json_entries_are_checked_when_loaded(tmp_path):
    good = {"size": 10, "addresses": [{"url": "https://x/a.tgz", "source": "us"}]}
    cases = {
        "recorded": ({**good, "sha256": "AB" * 32, "checksum_source": "our download, 2026-12-06"}, None),
        "no source": ({**good, "md5": "0" * 32}, "md5 must be 32 hex digits, with checksum_source"),
        "short": ({**good, "sha256": "0" * 32, "checksum_source": "x"}, "sha256 must be 64 hex digits"),
        "two": ({**good, "md5": "0" * 32, "sha256": "0" * 64, "checksum_source": "x"}, "at most one of md5, sha256"),
        "no address": ({"size": 1, "addresses": []}, "needs at least one address"),
        "no size": ({"addresses": good["addresses"]}, "needs size and addresses"),
    }
    for case, (entry, error) in cases.items():
        path = tmp_path / f"{case.replace(' ', '_')}.json"
        path.write_text(json.dumps({"files": {"a.tgz": entry}}))
        if error is None:
            checksum = sources.load_files(str(path))["a.tgz"].checksum
            assert (checksum.algorithm, checksum.value, checksum.kind) == ("sha256", "ab" * 32, "recorded")
        else:
            with pytest.raises(ValueError, match=f"file 'a.tgz': .*{re.escape(error)}"):
                sources.load_files(str(path))


def test_extra_checksums_are_sha256_or_md5_by_length(tmp_path):
    extra = tmp_path / "sums.json"
    extra.write_text(json.dumps({DTD_ARCHIVE: "A" * 64, "x.zip": "b" * 32}))
    table = sources.load_checksums(str(extra))
    assert [c.algorithm for c in table[DTD_ARCHIVE]] == ["md5", "sha256"]  # the published one stays
    assert [(c.algorithm, c.value) for c in table["x.zip"]] == [("md5", "b" * 32)]
    extra.write_text(json.dumps({"x.zip": "abc"}))
    with pytest.raises(SystemExit, match="file name -> SHA-256"):
        sources.load_checksums(str(extra))
