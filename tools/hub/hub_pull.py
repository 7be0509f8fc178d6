#!/usr/bin/env python3
"""`./phi pull MODEL_ID [--revision REV]`: a Phi model from the Hugging Face Hub, into the HF cache.

Downloads what phi-worker and phi-tokenizer read (config.json, model.safetensors or its index and
shards, the tokenizer files, generation_config.json where present) with huggingface_hub into the
standard cache (HF_HOME / HF_HUB_CACHE), so transformers and other tools share it, then prints the
snapshot folder on stdout. HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE are honoured (huggingface_hub
reads them). A download cut off midway stays as `<blob>.incomplete`; the next run resumes it.

huggingface_hub 0.36 checks only the size of what it downloads, so every LFS file is checked here
against the sha256 the Hub reports (model_info(files_metadata=True)); a mismatch removes the file
from the cache. Each failure is one line on stderr and a non-zero exit.
"""
import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import sys
import warnings

# Debian's requests next to the venv's urllib3 warns on import; nothing here depends on it.
warnings.filterwarnings("ignore", message=r"urllib3 .* doesn't match a supported version")
warnings.filterwarnings("ignore", message=r"The 'strict' parameter is no longer needed")

# What the worker and the tokenizer read; anything else in the repo is left on the Hub.
CONFIG = "config.json"
SINGLE_WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
OPTIONAL_FILES = ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                  "added_tokens.json", "vocab.json", "merges.txt"]
PHI_ARCHITECTURE = "PhiForCausalLM"

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class PullError(Exception):
    """One line for the user: what failed and what to do."""


def looks_like_repo_id(text):
    return bool(REPO_ID.match(text)) and ".." not in text and not text.endswith((".", "-"))


def _log(msg):
    print(f"phi pull: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# The cache layout (huggingface_hub's): <cache>/models--org--name/{blobs,snapshots/<commit>,refs}.

def _storage_folder(repo_id):
    from huggingface_hub import constants
    return os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))


def _snapshot_complete(folder):
    """The folder has what the worker and tokenizer need (weights whole, shards all there)."""
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        return False
    if not (os.path.isfile(os.path.join(folder, "tokenizer.json"))
            or all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))):
        return False
    if os.path.isfile(os.path.join(folder, SINGLE_WEIGHTS)):
        return True
    try:
        with open(os.path.join(folder, WEIGHTS_INDEX), encoding="utf-8") as f:
            shards = set(json.load(f)["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(os.path.isfile(os.path.join(folder, s)) for s in shards)


def cached_snapshot(repo_id, revision):
    """The complete cached snapshot of `revision` (a branch, tag or commit), or None."""
    storage = _storage_folder(repo_id)
    rev = revision or "main"
    commit = rev if COMMIT.match(rev) else None
    if commit is None:
        try:
            with open(os.path.join(storage, "refs", rev), encoding="utf-8") as f:
                commit = f.read().strip()
        except OSError:
            return None
    folder = os.path.join(storage, "snapshots", commit)
    return folder if _snapshot_complete(folder) else None


# ---------------------------------------------------------------------------------------------
# sha256 of LFS files. A stamp per verified blob (its size, mtime and inode) spares hashing
# gigabytes again on every `./phi up`; the stamps live outside the HF cache.

def _stamp_path(sha256):
    base = os.environ.get("PHI_HUB_VERIFIED_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "phi-serve", "hub-verified")
    return os.path.join(base, sha256)


def _stamp_of(path):
    st = os.stat(path)
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ino} {os.path.realpath(path)}"


def _already_verified(path, sha256):
    try:
        with open(_stamp_path(sha256), encoding="utf-8") as f:
            return f.read() == _stamp_of(path)
    except OSError:
        return False


def _sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_lfs_file(pointer, repo_id, filename, want_sha256):
    """Checks the downloaded file; on a mismatch removes its blob and snapshot link."""
    if _already_verified(pointer, want_sha256):
        return
    got = _sha256_of(pointer)
    if got != want_sha256:
        blob = os.path.realpath(pointer)
        for p in (pointer, blob):
            try:
                os.remove(p)
            except OSError:
                pass
        raise PullError(f"{repo_id}: {filename}: sha256 {got} does not match the Hub's {want_sha256}; "
                        f"the download was removed from the cache (run again to download it afresh)")
    stamp = _stamp_path(want_sha256)
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w", encoding="utf-8") as f:
        f.write(_stamp_of(pointer))


# ---------------------------------------------------------------------------------------------

def check_phi_config(path, repo_id):
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise PullError(f"{repo_id}: config.json is not valid JSON ({e})")
    if not isinstance(config, dict):
        raise PullError(f"{repo_id}: config.json is not a JSON object")
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if model_type != "phi" or (archs and PHI_ARCHITECTURE not in archs):
        raise PullError(f"{repo_id} is not a Phi model: its config.json has model_type {model_type!r} and "
                        f"architectures {archs!r}; phi-serve serves model_type 'phi' ({PHI_ARCHITECTURE})")


def _weight_files(repo_id, siblings, download):
    if SINGLE_WEIGHTS in siblings:
        return [SINGLE_WEIGHTS]
    if WEIGHTS_INDEX in siblings:
        index = download(WEIGHTS_INDEX)
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise PullError(f"{repo_id}: {WEIGHTS_INDEX} has no usable weight_map ({e})")
        missing = [s for s in shards if s not in siblings]
        if missing:
            raise PullError(f"{repo_id}: {WEIGHTS_INDEX} names shards the repo does not have: {', '.join(missing)}")
        return [WEIGHTS_INDEX] + shards
    others = sorted(s for s in siblings if s.endswith((".bin", ".pt", ".gguf", ".ckpt")))
    raise PullError(f"{repo_id} has no safetensors weights ({SINGLE_WEIGHTS} or {WEIGHTS_INDEX}; it has "
                    f"{', '.join(others) or 'none'}); phi-worker reads safetensors only")


def _blob_name(sibling):
    return sibling.lfs.sha256 if sibling.lfs else sibling.blob_id


def check_disk_space(repo_id, siblings, files):
    """Refuses before downloading when the cache's disk cannot hold what is missing."""
    storage = _storage_folder(repo_id)
    need = 0
    for name in files:
        s = siblings[name]
        size = s.lfs.size if s.lfs else (s.size or 0)
        blob = os.path.join(storage, "blobs", _blob_name(s) or "")
        if _blob_name(s) and os.path.exists(blob):
            continue
        try:
            size -= os.path.getsize(blob + ".incomplete")
        except OSError:
            pass
        need += max(0, size)
    probe = storage
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe) or "."
    free = shutil.disk_usage(probe).free
    if need > free:
        raise PullError(f"disk full: {repo_id} needs {need / 1e9:.2f} GB more in {storage}, but only "
                        f"{free / 1e9:.2f} GB are free there; free space or point HF_HOME at a larger disk")


def _describe(e, repo_id, revision, endpoint, current):
    """One line for an exception from huggingface_hub or requests."""
    import requests
    from huggingface_hub import get_token
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)
    where = f"{endpoint}/{repo_id}"
    if isinstance(e, GatedRepoError):
        if get_token():
            return (f"{repo_id} is gated and this HF_TOKEN has no access: request it at {where} "
                    f"(HTTP {e.response.status_code})")
        return f"{repo_id} is gated: accept its terms at {where}, then set HF_TOKEN (or `hf auth login`)"
    if isinstance(e, RepositoryNotFoundError):
        return (f"no model {repo_id} on {endpoint} (HTTP {e.response.status_code}; a private repo needs HF_TOKEN)")
    if isinstance(e, RevisionNotFoundError):
        return f"{repo_id} has no revision {revision!r} (a branch, tag or commit)"
    if isinstance(e, EntryNotFoundError):
        return f"{repo_id}: {current} is not in the repo at {revision or 'main'}"
    if isinstance(e, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set and {repo_id} ({revision or 'main'}) is not complete in the cache"
    if isinstance(e, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ReadTimeout)) or (
            isinstance(e, requests.exceptions.ConnectionError) and current):
        return (f"download of {current} was cut off ({type(e).__name__}); run the same command again "
                f"to resume where it stopped")
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, LocalEntryNotFoundError)):
        return (f"cannot reach {endpoint} ({type(e).__name__}) and {repo_id} is not complete in the cache; "
                f"check the network, HF_ENDPOINT or a proxy")
    if isinstance(e, HfHubHTTPError):
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"{repo_id}: HTTP {e.response.status_code if e.response is not None else '?'} from {endpoint} {first}"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return (f"disk full while writing {current or repo_id} under {_storage_folder(repo_id)}; "
                f"free space or point HF_HOME at a larger disk, then run again to resume")
    if isinstance(e, OSError):
        return f"{current or repo_id}: {e.strerror or e}"
    return f"{repo_id}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _download_all(repo_id, revision):
    from huggingface_hub import HfApi, hf_hub_download
    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    if CONFIG not in siblings:
        raise PullError(f"{repo_id} has no config.json: not a transformers model repo")
    state = {"current": None}

    def download(name):
        state["current"] = name
        path = hf_hub_download(repo_id, name, revision=commit)
        s = siblings.get(name)
        if s is not None and s.lfs is not None:
            verify_lfs_file(path, repo_id, name, s.lfs.sha256)
        state["current"] = None
        return path

    try:
        check_phi_config(download(CONFIG), repo_id)  # before any weights
        weights = _weight_files(repo_id, siblings, download)
        if "tokenizer.json" not in siblings and not ("vocab.json" in siblings and "merges.txt" in siblings):
            raise PullError(f"{repo_id} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)")
        rest = [f for f in OPTIONAL_FILES if f in siblings]
        check_disk_space(repo_id, siblings, weights + rest)
        for name in rest + weights:
            download(name)
    except PullError:
        raise
    except Exception as e:  # noqa: BLE001 — every failure becomes one line
        e.phi_current = state["current"]
        raise
    folder = os.path.join(_storage_folder(repo_id), "snapshots", commit)
    # A branch or tag is remembered as hf_hub_download / snapshot_download do, so the offline
    # fallback (and transformers with HF_HUB_OFFLINE) finds this snapshot by its name.
    rev = revision or "main"
    if rev != commit:
        ref = os.path.join(_storage_folder(repo_id), "refs", rev)  # rev may hold '/': refs/pr/1
        os.makedirs(os.path.dirname(ref), exist_ok=True)
        with open(ref, "w", encoding="utf-8") as f:
            f.write(commit)
    return folder


def pull(repo_id, revision=None, log=_log):
    """Downloads (or finds in the cache) `repo_id` at `revision`; returns the snapshot folder.
    Raises PullError with one line."""
    import requests
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    if not looks_like_repo_id(repo_id):
        raise PullError(f"{repo_id!r} is not a Hub model id (owner/name)")
    endpoint = constants.ENDPOINT
    try:
        return _download_all(repo_id, revision)
    except PullError:
        raise
    except Exception as e:  # noqa: BLE001
        current = getattr(e, "phi_current", None)
        offline = isinstance(e, (OfflineModeIsEnabled, LocalEntryNotFoundError)) or (
            isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)) and current is None)
        if offline:
            folder = cached_snapshot(repo_id, revision)
            if folder:
                log(f"{endpoint} unreachable ({type(e).__name__}); using the cached snapshot")
                return folder
        raise PullError(_describe(e, repo_id, revision, endpoint, current)) from e


def main(argv=None):
    p = argparse.ArgumentParser(prog="phi pull", description=__doc__.split("\n\n")[0])
    p.add_argument("model_id", help="Hub model id, e.g. rasyosef/Phi-1_5-Instruct-v0.1")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    args = p.parse_args(argv)
    try:
        folder = pull(args.model_id, args.revision)
    except PullError as e:
        _log(str(e))
        return 1
    except KeyboardInterrupt:
        _log("interrupted; run the same command again to resume")
        return 130
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
