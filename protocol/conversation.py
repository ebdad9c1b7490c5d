"""The default conversation: items in order, addressed by id, inserted after a given item."""

from __future__ import annotations

from collections.abc import Iterator

from .errors import ProtocolError
from .items import Item

ROOT = "root"


class Conversation:
    """Ordered items; every change replaces an item value, none is mutated in place."""

    def __init__(self) -> None:
        self._items: list[Item] = []

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Item]:
        return iter(tuple(self._items))

    def __contains__(self, item_id: object) -> bool:
        return any(item.id == item_id for item in self._items)

    @property
    def last_id(self) -> str | None:
        return self._items[-1].id if self._items else None

    def _index(self, item_id: str) -> int:
        for index, item in enumerate(self._items):
            if item.id == item_id:
                return index
        raise KeyError(item_id)

    def get(self, item_id: str, param: str = "item_id") -> Item:
        try:
            return self._items[self._index(item_id)]
        except KeyError:
            raise item_not_found(item_id, param) from None

    def previous_id(self, item_id: str) -> str | None:
        index = self._index(item_id)
        return self._items[index - 1].id if index else None

    def check_insert(self, item: Item, previous_item_id: str | None) -> None:
        """Raise the error :meth:`insert` would raise, changing nothing."""
        if item.id in self:
            raise item_already_exists(item.id)
        if previous_item_id not in (None, ROOT) and previous_item_id not in self:
            raise ProtocolError(
                "invalid_value",
                f"Previous item with id '{previous_item_id}' not found in the conversation.",
                "previous_item_id",
            )

    def insert(self, item: Item, previous_item_id: str | None = None) -> str | None:
        """Add ``item`` after ``previous_item_id`` (``None``: at the end, ``"root"``: first).

        Returns the id of the item now before it (``None`` when it is first).
        """
        self.check_insert(item, previous_item_id)
        if previous_item_id is None:
            index = len(self._items)
        elif previous_item_id == ROOT:
            index = 0
        else:
            index = self._index(previous_item_id) + 1
        self._items.insert(index, item)
        return self._items[index - 1].id if index else None

    def replace(self, item: Item) -> None:
        """Put a new value for an item that is still in the conversation (no-op if deleted)."""
        try:
            self._items[self._index(item.id)] = item
        except KeyError:
            pass

    def delete(self, item_id: str) -> None:
        del self._items[self._index(item_id)]


def item_not_found(item_id: str, param: str = "item_id") -> ProtocolError:
    return ProtocolError(
        "item_not_found", f"Item with item_id '{item_id}' not found in the conversation.", param
    )


def item_already_exists(item_id: str) -> ProtocolError:
    return ProtocolError(
        "item_already_exists",
        f"Item with id '{item_id}' already exists in the conversation.",
        "item.id",
    )
