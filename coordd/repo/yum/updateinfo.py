"""updateinfo.xml: a feed's errata as ``Erratum`` records (plain functions, worker threads)."""

from __future__ import annotations

from typing import Any

from coordd.content.records import Erratum, ErratumCollection
from coordd.repo.yum.repomd import FetchedMetadata
from coordd.repo.yum.safexml import child_text


def _bool_text(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def parse_update(element: Any) -> Erratum:
    """One ``<update>`` of updateinfo.xml as an erratum record."""
    issued = element.find("issued")
    updated = element.find("updated")
    references = element.find("references")
    pkglist = element.find("pkglist")
    collections: list[ErratumCollection] = []
    if pkglist is not None:
        for coll in pkglist.findall("collection"):
            module = coll.find("module")
            collections.append(
                {
                    "short": coll.get("short"),
                    "name": child_text(coll, "name"),
                    "module": None if module is None else dict(module.attrib),
                    "packages": [
                        {
                            "name": pkg.get("name"),
                            "epoch": pkg.get("epoch"),
                            "version": pkg.get("version"),
                            "release": pkg.get("release"),
                            "arch": pkg.get("arch"),
                            "src": pkg.get("src"),
                            "filename": child_text(pkg, "filename"),
                            "sum_type": (
                                None if pkg.find("sum") is None else pkg.find("sum").get("type")
                            ),
                            "sum": child_text(pkg, "sum"),
                            "reboot_suggested": _bool_text(child_text(pkg, "reboot_suggested")),
                            "restart_suggested": _bool_text(child_text(pkg, "restart_suggested")),
                            "relogin_suggested": _bool_text(child_text(pkg, "relogin_suggested")),
                        }
                        for pkg in coll.findall("package")
                    ],
                }
            )
    return {
        "id": child_text(element, "id"),
        "from": element.get("from"),
        "status": element.get("status"),
        "type": element.get("type"),
        "version": element.get("version"),
        "title": child_text(element, "title"),
        "issued_date": None if issued is None else issued.get("date"),
        "updated_date": None if updated is None else updated.get("date"),
        "rights": child_text(element, "rights"),
        "release": child_text(element, "release"),
        "pushcount": child_text(element, "pushcount"),
        "severity": child_text(element, "severity"),
        "summary": child_text(element, "summary"),
        "description": child_text(element, "description"),
        "solution": child_text(element, "solution"),
        "reboot_suggested": _bool_text(child_text(element, "reboot_suggested")),
        "references": (
            [] if references is None else [dict(r.attrib) for r in references.findall("reference")]
        ),
        "collections": collections,
    }


def read_errata(metadata: FetchedMetadata) -> list[Erratum]:
    """Every ``<update>`` of the file, in order."""
    return [parse_update(element) for element in metadata.elements("update", "updates")]


__all__ = ["parse_update", "read_errata"]
