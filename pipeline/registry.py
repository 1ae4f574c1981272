"""One small generic registry: BACKBONES, FLOWS and HEADS are instances of it.

Beyond names registered in code, a registry can have
- families: names `prefix:rest` resolved on first lookup by a function (`timm:vit_small_patch16_224`),
  so a whole library's zoo is usable without listing it;
- plug-ins: Python entry points in a group (`stpipe.backbones`, `stpipe.heads`), loaded on the first
  lookup or listing. An entry point names a module, imported (it registers its entries with the
  registry's `register`/`add`, e.g. `BACKBONES.register` or `register_head`), or a function, called
  with no arguments to do the same. A plug-in that fails to load is reported (`plugin_errors`, and
  in the unknown-name error) instead of breaking every other name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pipeline.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique names to builders plus metadata (a dict, or `meta_type` instances when typed).

    >>> HEADS = Registry("head")
    >>> @HEADS.register("mlp", input_kind="pooled")
    ... def build_mlp(*, num_classes): ...
    """

    def __init__(self, kind: str, *, meta_type: type | None = None, plugins: str | None = None):
        self.kind = kind
        self.meta_type = meta_type  # a (frozen) dataclass: `add(**meta)` builds one, `meta()` returns it
        self.plugin_group = plugins
        self._items: dict[str, T] = {}
        self._meta: dict[str, Any] = {}
        self._origin: dict[str, str] = {}  # name -> "plugin <distribution>" for plug-in entries
        self._families: dict[str, tuple[Callable[[str], tuple[T, dict[str, Any]]], str]] = {}
        self._resolved: dict[str, tuple[T, Any]] = {}
        self._plugins_loaded = plugins is None
        self._loading: str | None = None  # the distribution whose plug-in is being loaded
        self.plugin_errors: dict[str, str] = {}  # entry point name -> one-line reason

    # -- registering ---------------------------------------------------------------------------------

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return decorator

    def add(self, name: str, obj: T, **meta: Any) -> None:
        if name in self._items:
            raise RegistryError(f"{self.kind} {name!r} is already registered")
        if ":" in name and name.split(":", 1)[0] in self._families:
            raise RegistryError(f"{self.kind} {name!r}: the prefix {name.split(':', 1)[0]}: is a family")
        self._meta[name] = self._typed(name, meta)
        self._items[name] = obj
        if self._loading is not None:
            self._origin[name] = f"plugin {self._loading}"

    def add_family(self, prefix: str, resolve: Callable[[str], tuple[T, dict[str, Any]]], *, summary: str) -> None:
        """Names `prefix:rest` resolve to `resolve(rest) -> (obj, meta)` on first lookup (then cached).

        `resolve` raises a RegistryError subclass (one line) for names its library does not have."""
        if prefix in self._families:
            raise RegistryError(f"{self.kind} family {prefix!r} is already registered")
        self._families[prefix] = (resolve, summary)

    def _typed(self, name: str, meta: dict[str, Any]) -> Any:
        if self.meta_type is None:
            return dict(meta)
        try:
            return self.meta_type(**meta)
        except TypeError as error:
            raise RegistryError(f"{self.kind} {name!r}: bad metadata ({error})") from None

    # -- plug-ins ------------------------------------------------------------------------------------

    def use_plugins(self, group: str) -> None:
        """Load the entry points of `group` on the next lookup (after the built-in entries, so
        those keep their names and listing order)."""
        self.plugin_group, self._plugins_loaded = group, False

    def load_plugins(self) -> None:
        """Load the entry points of `plugin_group` once (every lookup and listing calls this)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.plugin_group):
            dist = point.dist.name if point.dist is not None else point.value
            self._loading = dist
            try:
                loaded = point.load()
                if callable(loaded) and not isinstance(loaded, type):
                    loaded()
            except Exception as error:  # noqa: BLE001 - a broken plug-in must not break the others
                first = (str(error).splitlines() or [""])[0]
                self.plugin_errors[point.name] = f"{dist} ({point.value}): {type(error).__name__}: {first}"
            finally:
                self._loading = None

    def origin(self, name: str) -> str:
        """Where an entry comes from: "plugin <distribution>", a family prefix, or "builtin"."""
        self.load_plugins()
        if name in self._origin:
            return self._origin[name]
        family = self._family_of(name)
        return f"family {family}" if family else "builtin"

    # -- lookup --------------------------------------------------------------------------------------

    def _family_of(self, name: str) -> str | None:
        prefix = name.split(":", 1)[0] if isinstance(name, str) and ":" in name else None
        return prefix if prefix in self._families else None

    def _lookup(self, name: str) -> tuple[T, Any]:
        self.load_plugins()
        if name in self._items:
            return self._items[name], self._meta[name]
        if name in self._resolved:
            return self._resolved[name]
        family = self._family_of(name)
        if family is not None:
            resolve, _ = self._families[family]
            obj, meta = resolve(name.split(":", 1)[1])
            self._resolved[name] = (obj, self._typed(name, meta))
            return self._resolved[name]
        known = ", ".join(sorted(self._items)) or "none"
        families = "".join(f"; or {p}:NAME ({s})" for p, (_, s) in self._families.items())
        broken = "".join(f"; plug-in {n} failed to load: {why}" for n, why in self.plugin_errors.items())
        raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}{families}{broken}")

    def get(self, name: str) -> T:
        return self._lookup(name)[0]

    def meta(self, name: str) -> Any:
        meta = self._lookup(name)[1]
        return meta if self.meta_type is not None else dict(meta)  # typed metadata is frozen

    def names(self) -> list[str]:
        """Registered names (built-in, then plug-ins); family names are open-ended, see `families`."""
        self.load_plugins()
        return list(self._items)

    def families(self) -> dict[str, str]:
        """{prefix: one-line summary} of the `prefix:NAME` families."""
        return {prefix: summary for prefix, (_, summary) in self._families.items()}

    def __contains__(self, name: object) -> bool:
        self.load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
