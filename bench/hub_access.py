"""The Hugging Face hub as this machine sees it: offline or not, which endpoint, whether an HTTP
server answers there (through the proxy the environment names), and which files of a repository
the local HF cache already holds. Asked before any download, because hub clients retry for about
a minute before they give up."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_ENDPOINT = "https://huggingface.co"
# The files timm's hub loader takes weights from, in the order it tries them.
HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
# huggingface_hub's own spelling of a true environment flag (constants._is_true).
_TRUE = ("1", "ON", "YES", "TRUE")


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set, in the environment now or when huggingface_hub was imported
    (it reads the variable once, at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def hub_endpoint() -> str:
    """The hub the clients talk to: HF_ENDPOINT (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether an HTTP server answers a HEAD request for `url` within `timeout` seconds. urllib
    goes through HTTPS_PROXY / HTTP_PROXY and skips NO_PROXY hosts as the hub clients do, so a
    machine that reaches the hub only through a proxy counts as online; any HTTP answer, an
    error status included, means the server is there."""
    # A fresh opener reads the proxy variables now; urlopen's shared one keeps its first reading.
    opener = urllib.request.build_opener()
    try:
        with opener.open(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):  # URLError is an OSError: no route, refused, timed out
        return False


def split_revision(repo: str) -> tuple[str, str | None]:
    """'ORG/NAME@REV' -> ('ORG/NAME', 'REV'); timm's hub names carry the revision this way."""
    name, _, revision = repo.partition("@")
    return name, revision or None


def cached_file(repo: str, filename: str) -> str | None:
    """The local path of `filename` of hub repository `repo` (ORG/NAME[@REV]) in the HF cache,
    None when it is not there."""
    from huggingface_hub import try_to_load_from_cache

    name, revision = split_revision(repo)
    found = try_to_load_from_cache(name, filename, revision=revision)
    return found if isinstance(found, str) else None


def url_cached(url: str) -> bool:
    """Whether weights timm loads from `url` are in torch's hub cache already (torch.hub.get_dir:
    $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch; then hub/checkpoints/ and the
    URL's file name)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("TORCH_HOME") or os.path.join(cache, "torch")
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return bool(name) and os.path.isfile(
        os.path.join(os.path.expanduser(home), "hub", "checkpoints", name)
    )


def unavailable_reason() -> str | None:
    """Why nothing can be downloaded from the hub now (HF_HUB_OFFLINE, or no answer from the
    endpoint), or None when it answers."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    endpoint = hub_endpoint()
    return None if reachable(endpoint) else f"{endpoint} cannot be reached"


def timm_hub_problem() -> str | None:
    """Why the installed timm cannot use the Hugging Face hub, or None when it can: timm before
    1.0.21 imports a helper huggingface_hub 1.0 removed, and then loads nothing from the hub, not
    even from its cache (and says huggingface_hub is missing)."""
    from timm.models import _hub

    if getattr(_hub, "_has_hf_hub", True):
        return None
    import huggingface_hub
    import timm

    return (
        f"timm {timm.__version__} cannot use huggingface_hub {huggingface_hub.__version__} "
        "(timm before 1.0.21 needs huggingface_hub < 1.0): pip install -U 'timm>=1.0.21'"
    )
