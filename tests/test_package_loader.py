"""Every loader check refuses a real archive for its own reason and leaves nothing on disk."""

from __future__ import annotations

import importlib.machinery

import json
import logging
import tarfile
from pathlib import Path

import pytest

from supervisor import errors
from supervisor.archive import ArchiveTooLargeError, ExtractionLimits, NotAnArchiveError, UnsafeArchiveError
from supervisor.package import extract_package
from tests.archives import (
    GUIDE_MODULE,
    MINIMAL_TOML,
    file_member,
    guide_package,
    manifest_dict,
    package_bytes,
    special_member,
    tar_bytes,
    toml_package,
)

GUIDE_FILES = {"data_pipeline/__init__.py": GUIDE_MODULE}


def refuse(staging: Path, archive: bytes, error: type[Exception], match: str, **kwargs) -> Exception:
    with pytest.raises(error, match=match) as caught:
        extract_package(archive, staging, **kwargs)
    leftovers = list(staging.iterdir()) if staging.exists() else []
    assert leftovers == [], f"refusal left {leftovers} on disk"
    return caught.value


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return tmp_path / "staging"


@pytest.mark.parametrize("compression", ["bz2", "gz", "xz", "tar"])
def test_loads_every_compression_recognised_by_content(staging, tmp_path, compression):
    archive = package_bytes(GUIDE_FILES, manifest_dict(), compression=compression)
    path = tmp_path / "named-anything.cloaca"  # the file name does not matter
    path.write_bytes(archive)
    package = extract_package(path, staging)
    assert package.name == "data-pipeline" and package.entry_module == "data_pipeline"
    assert package.source_dir == package.root and package.vendor_dir is None


def test_src_layout_with_vendor_and_requirements_lock(staging):
    files = {"src/data_pipeline/__init__.py": GUIDE_MODULE, "requirements.lock": "six==1.16.0\n",
             "vendor/six.py": "# vendored\n"}
    package = extract_package(package_bytes(files, manifest_dict()), staging)
    assert package.source_dir == package.root / "src"
    assert package.vendor_dir == package.root / "vendor"
    assert package.import_paths == [str(package.root / "src"), str(package.root / "vendor")]


def test_placeholder_fingerprint_is_accepted_with_a_warning(staging, caplog):
    with caplog.at_level(logging.WARNING):
        package = extract_package(guide_package(), staging)
    assert any("sha256:placeholder" in warning for warning in package.warnings)
    assert "not verified" in caplog.text


def test_real_fingerprint_is_verified(staging, tmp_path):
    good = package_bytes(GUIDE_FILES, manifest_dict(), real_fingerprint=True, tmp_dir=tmp_path)
    package = extract_package(good, staging)
    assert package.warnings == [] and package.manifest.package.fingerprint == package.fingerprint


def test_fingerprint_mismatch(staging, tmp_path):
    manifest = manifest_dict(fingerprint="sha256:" + "0" * 64)
    refuse(staging, package_bytes(GUIDE_FILES, manifest), errors.FingerprintMismatchError,
           "fingerprint mismatch: the manifest says sha256:0000")


def test_not_an_archive(staging):
    refuse(staging, b"this is just text, not a tar archive" * 20, NotAnArchiveError, "not a package archive")
    refuse(staging, b"BZh91AY&SY" + b"\x00" * 100, NotAnArchiveError, "not a readable bz2 tar|corrupt")


def test_truncated_archive(staging):
    archive = guide_package()
    refuse(staging, archive[: len(archive) // 2], NotAnArchiveError, "corrupt or truncated|not a readable")


def test_missing_manifest(staging):
    refuse(staging, package_bytes(GUIDE_FILES, None), errors.MissingManifestError,
           "Missing package manifest: expected manifest.json at the archive.s root .format 2. or <name>-<version>/package.toml")


@pytest.mark.parametrize("manifest, field", [
    ("{not json", "not valid JSON"),
    (json.dumps(["a list"]), "must hold a JSON object"),
    (json.dumps(manifest_dict(format_version="1")), "format_version"),
    (json.dumps({k: v for k, v in manifest_dict().items() if k != "tasks"}), "tasks: Field required"),
    (json.dumps(manifest_dict(entry_module="not-a-module")), "python.entry_module"),
    (json.dumps(manifest_dict(tasks=[{"id": "a", "function": "nocolon"}])), r"tasks.0.function"),
    (json.dumps(manifest_dict(tasks=[{"id": "a", "function": "m:a"}, {"id": "a", "function": "m:b"}])),
     "appears more than once"),
])
def test_invalid_manifest_names_the_field(staging, manifest, field):
    refuse(staging, package_bytes(GUIDE_FILES, manifest), errors.InvalidManifestError, field)


def test_rust_package_refused_by_name(staging):
    manifest = manifest_dict(language="rust", rust={"target": "linux-x86_64"})
    del manifest["python"]
    refuse(staging, package_bytes({"lib.so": b"\x7fELF"}, manifest), errors.WrongLanguageError,
           "Wrong package language: expected python, got rust")


def test_requires_python_not_met(staging):
    manifest = manifest_dict()
    manifest["python"]["requires_python"] = ">=4.0"
    refuse(staging, package_bytes(GUIDE_FILES, manifest), errors.UnsupportedPythonError,
           r"requires Python >=4.0, but this service runs Python 3\.")


def test_entry_module_missing(staging):
    refuse(staging, package_bytes({"other/__init__.py": ""}, manifest_dict()), errors.MissingEntryModuleError,
           "entry module 'data_pipeline' not found: expected data_pipeline.py or data_pipeline/__init__.py")


@pytest.mark.parametrize("path, name", [
    ("json/__init__.py", "json"),            # the guide's list, in the source dir
    ("vendor/subprocess.py", "subprocess"),  # ... and in vendor/
    ("vendor/asyncio/__init__.py", "asyncio"),  # sys.stdlib_module_names
    (f"vendor/_socket{importlib.machinery.EXTENSION_SUFFIXES[0]}", "_socket"),  # an extension module
    ("vendor/cloaca/__init__.py", "cloaca"),  # reserved for the sandbox runtime
])
def test_stdlib_shadowing(staging, path, name):
    files = dict(GUIDE_FILES, **{path: ""})
    error = refuse(staging, package_bytes(files, manifest_dict()), errors.ShadowingError, f"'{name}'")
    assert "Remove or rename" in str(error)


def test_vendor_dist_info_and_ordinary_modules_are_fine(staging):
    files = dict(GUIDE_FILES, **{"vendor/six.py": "", "vendor/six-1.16.0.dist-info/METADATA": "",
                                 "vendor/__pycache__/six.cpython-311.pyc": ""})
    assert extract_package(package_bytes(files, manifest_dict()), staging).vendor_dir is not None


def test_unknown_dependency(staging):
    tasks = [{"id": "load", "function": "m:load", "dependencies": ["transform", "ghost"]},
             {"id": "transform", "function": "m:t", "dependencies": []}]
    refuse(staging, package_bytes(GUIDE_FILES, manifest_dict(tasks=tasks)), errors.TaskGraphError,
           "task 'load' depends on unknown task 'ghost'")


def test_dependency_cycle(staging):
    tasks = [{"id": "a", "function": "m:a", "dependencies": ["c"]},
             {"id": "b", "function": "m:b", "dependencies": ["a"]},
             {"id": "c", "function": "m:c", "dependencies": ["b"]}]
    refuse(staging, package_bytes(GUIDE_FILES, manifest_dict(tasks=tasks)), errors.TaskGraphError,
           "dependency cycle: a -> c -> b -> a")


# --- extraction is a security boundary -------------------------------------------------

def _hostile(*extra) -> bytes:
    return package_bytes(GUIDE_FILES, manifest_dict(), extra=list(extra))


@pytest.mark.parametrize("member, match", [
    (file_member("/etc/evil", "x"), "absolute path"),
    (file_member("../escape.py", "x"), r"'\.\.' component"),
    (file_member("data_pipeline/../../escape.py", "x"), r"'\.\.' component"),
    (special_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
    (special_member("data_pipeline/link", tarfile.SYMTYPE, "../../outside"), "points outside the package"),
    (special_member("hard", tarfile.LNKTYPE, "../outside"), "points outside the package"),
    (special_member("hard", tarfile.LNKTYPE, "not/there"), "must point to a file earlier"),
    (special_member("dev", tarfile.CHRTYPE), "device file"),
    (special_member("blk", tarfile.BLKTYPE), "device file"),
    (special_member("pipe", tarfile.FIFOTYPE), "FIFO"),
])
def test_unsafe_members_refused(staging, member, match):
    refuse(staging, _hostile(member), UnsafeArchiveError, match)


def test_write_through_link_to_inside_directory_stays_inside(staging):
    # The link itself stays inside, so a file written through it must be checked on its own.
    archive = _hostile(special_member("inner", tarfile.SYMTYPE, "data_pipeline"),
                       file_member("inner/ok.py", "x"))
    assert extract_package(archive, staging).root.joinpath("data_pipeline/ok.py").is_file()


def test_links_inside_the_package_are_kept(staging):
    archive = _hostile(special_member("data_pipeline/alias.py", tarfile.SYMTYPE, "__init__.py"),
                       special_member("duplicate.py", tarfile.LNKTYPE, "data_pipeline/__init__.py"))
    package = extract_package(archive, staging)
    assert (package.root / "data_pipeline/alias.py").read_text() == GUIDE_MODULE
    assert (package.root / "duplicate.py").read_text() == GUIDE_MODULE


def test_duplicate_entries_refused(staging):
    refuse(staging, _hostile(file_member("data_pipeline/__init__.py", "evil = True")), UnsafeArchiveError,
           "appears more than once")


def test_compression_bomb_stopped_by_size_cap(staging):
    # 64 MiB of zeros compresses to a few KiB; the cap stops it before it is written out.
    bomb = tar_bytes([file_member("manifest.json", json.dumps(manifest_dict())),
                      file_member("zeros.bin", b"\0" * (64 * 1024 * 1024))], "bz2")
    assert len(bomb) < 100_000
    refuse(staging, bomb, ArchiveTooLargeError, "is 67108864 bytes",
           limits=ExtractionLimits(max_file_bytes=8 * 1024 * 1024))
    refuse(staging, bomb, ArchiveTooLargeError, "expands to more than",
           limits=ExtractionLimits(max_total_bytes=16 * 1024 * 1024))


def test_file_count_cap(staging):
    many = {f"data_pipeline/m{i}.py": "" for i in range(60)}
    refuse(staging, package_bytes(dict(GUIDE_FILES, **many), manifest_dict()), ArchiveTooLargeError,
           "more than 50 entries", limits=ExtractionLimits(max_files=50))


def test_every_refusal_has_a_distinct_code():
    classes = [errors.MissingManifestError, errors.InvalidManifestError, errors.WrongLanguageError,
               errors.UnsupportedPythonError, errors.FingerprintMismatchError, errors.MissingEntryModuleError,
               errors.ShadowingError, errors.TaskGraphError, errors.DiscoveryError, errors.ImportTimeoutError,
               errors.MissingSourceDirError, errors.UnsupportedFeatureError, errors.EmptyPackageError,
               errors.DuplicateTaskError, NotAnArchiveError, UnsafeArchiveError, ArchiveTooLargeError]
    assert len({cls.code for cls in classes}) == len(classes)


# --- the package.toml format (§2b of the cloaca reference) --------------------------------

def test_package_toml_archive_loads_whatever_the_file_is_called(staging, tmp_path):
    path = tmp_path / "python-workflow.fid"
    path.write_bytes(toml_package())
    package = extract_package(path, staging)
    top = package.root / "test-fixture-python-1.0.0"
    assert (package.format, package.name, package.version) == ("package.toml", "test-fixture-python", "1.0.0")
    assert package.source_dir == top / "workflow" and package.vendor_dir is None
    assert package.workflow_name == "fixture_workflow"
    # The engine's inference: entry_module from the name, language from the layout, header defaults.
    assert package.entry_module == "test_fixture_python.tasks"
    resolved = package.package_toml
    assert (resolved.metadata.language, resolved.package.interface, resolved.package.interface_version,
            resolved.package.extension) == ("python", "cloacina-workflow-plugin", 1, "cloacina")
    assert package.fingerprint.startswith("sha256:") and package.warnings == []


def test_package_toml_explicit_values_win_and_vendor_goes_on_the_path(staging):
    manifest = MINIMAL_TOML + 'entry_module = "custom.entry"\nlanguage = "python"\nrequires_python = ">=3.10"\n'
    files = {"workflow/custom/__init__.py": "", "workflow/custom/entry.py": "", "vendor/six.py": "# vendored\n"}
    package = extract_package(toml_package(files, manifest), staging)
    top = package.root / "test-fixture-python-1.0.0"
    assert package.entry_module == "custom.entry" and package.requires_python == ">=3.10"
    assert package.import_paths == [str(top / "workflow"), str(top / "vendor")]


def test_package_toml_without_workflow_name_uses_the_engines_unknown_with_a_warning(staging):
    package = extract_package(toml_package(package_toml='[package]\nname = "test-fixture-python"\n'
                                                        'version = "1.0.0"\n'), staging)
    assert package.workflow_name == "unknown"
    assert any("workflow_name is not set" in warning for warning in package.warnings)


@pytest.mark.parametrize("manifest, error, match", [
    (MINIMAL_TOML + 'package_type = ["workflow"]\n', errors.InvalidManifestError,
     r"unknown field `package_type` in \[metadata\], expected one of `language`, `workflow_name`"),
    (MINIMAL_TOML + '[[metadata.triggers]]\nname = "t"\n', errors.InvalidManifestError, "unknown field `triggers`"),
    ('[package]\nversion = "1"\n', errors.InvalidManifestError, r"package\.name: Field required"),
    ("[package\n", errors.InvalidManifestError, "not valid TOML"),
    (MINIMAL_TOML + 'language = "rust"\n', errors.WrongLanguageError,
     "Wrong package language: expected python, got rust"),
    (MINIMAL_TOML + 'graph_name = "scores"\n', errors.UnsupportedFeatureError,
     "computation graph 'scores'.*does not run computation graphs"),
    (MINIMAL_TOML + 'providers = { pg = "1.0" }\n', errors.UnsupportedFeatureError, "constructor providers"),
    (MINIMAL_TOML + 'requires_python = ">=4.0"\n', errors.UnsupportedPythonError, "requires Python >=4.0"),
    (MINIMAL_TOML.replace("[package]", '[package]\ninterface = "image-filter"'), errors.InvalidManifestError,
     "not a Cloacina workflow package"),
    (MINIMAL_TOML + 'entry_module = "not-a-module"\n', errors.InvalidManifestError, "metadata.entry_module"),
])
def test_package_toml_refusals(staging, manifest, error, match):
    refuse(staging, toml_package(package_toml=manifest), error, match)


def test_package_toml_language_cannot_be_inferred_without_workflow_dir(staging):
    refuse(staging, toml_package({"fixture/tasks.py": ""}), errors.InvalidManifestError,
           "cannot infer \\[metadata\\].language")
    refuse(staging, toml_package({"fixture/tasks.py": ""}, MINIMAL_TOML + 'language = "python"\n'),
           errors.MissingSourceDirError, "Missing workflow source directory in Python package")


def test_package_toml_entry_module_must_resolve_under_workflow(staging):
    refuse(staging, toml_package({"workflow/other/__init__.py": ""}), errors.MissingEntryModuleError,
           "expected test_fixture_python/tasks.py or test_fixture_python/tasks/__init__.py under "
           "test-fixture-python-1.0.0/workflow/")


def test_package_toml_must_be_inside_one_top_level_directory(staging):
    refuse(staging, toml_package(top=""), errors.MissingManifestError, "must be inside a single top-level directory")
    two = tar_bytes([file_member("a-1/package.toml", MINIMAL_TOML), file_member("b-1/package.toml", MINIMAL_TOML)])
    refuse(staging, two, errors.InvalidManifestError, "holds 2 package directories")


@pytest.mark.parametrize("path, name", [("workflow/json/__init__.py", "json"), ("vendor/subprocess.py", "subprocess"),
                                        ("vendor/cloaca/__init__.py", "cloaca")])
def test_package_toml_stdlib_shadowing(staging, path, name):
    files = {"workflow/test_fixture_python/__init__.py": "", "workflow/test_fixture_python/tasks.py": "", path: ""}
    error = refuse(staging, toml_package(files), errors.ShadowingError, f"'{name}'")
    assert "test-fixture-python-1.0.0/" in str(error)


@pytest.mark.parametrize("member, failure, match", [
    (file_member("../escape.py", "x"), UnsafeArchiveError, r"'\.\.' component"),
    (special_member("test-fixture-python-1.0.0/link", tarfile.SYMTYPE, "/etc/passwd"), UnsafeArchiveError,
     "absolute path"),
    (special_member("test-fixture-python-1.0.0/dev", tarfile.CHRTYPE), UnsafeArchiveError, "device file"),
])
def test_package_toml_extraction_is_checked_the_same(staging, member, failure, match):
    refuse(staging, toml_package(extra=[member]), failure, match)


def test_package_toml_caps_apply(staging):
    many = {f"workflow/test_fixture_python/m{i}.py": "" for i in range(60)}
    refuse(staging, toml_package(dict(many, **{"workflow/test_fixture_python/tasks.py": ""})), ArchiveTooLargeError,
           "more than 50 entries", limits=ExtractionLimits(max_files=50))


def test_manifest_json_packages_may_keep_their_source_under_workflow(staging):
    files = {"workflow/data_pipeline/__init__.py": GUIDE_MODULE, "vendor/six.py": ""}
    package = extract_package(package_bytes(files, manifest_dict()), staging)
    assert package.format == "manifest.json" and package.source_dir == package.root / "workflow"
    assert package.workflow_name == "data_pipeline"  # the seeds' loader named it after the entry module
