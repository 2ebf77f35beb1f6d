"""Make a source DICOM header fit to be copied into a new object (a SEG): keep what is valid, repair
what has one obvious valid form, empty or drop the rest.

Real archives hold headers that viewers accept but a strict writer refuses: an empty or unknown
Specific Character Set, dates and times in other forms (``2021-03-04``, ``10:22:05``), non-standard
code strings (Patient's Sex ``X``), over-long strings, stray control characters, attributes missing
altogether (anonymised data). The rules, applied to every top-level attribute:

- values valid for their VR (PS3.5 6.2: characters, length, date/time syntax and calendar) are kept;
- DA/TM/DT values with separators (``YYYY-MM-DD``, ``YYYY.MM.DD``, ``HH:MM:SS``, ISO 8601
  ``YYYY-MM-DDTHH:MM:SS``) are rewritten in the DICOM form when that is a real date/time;
- code strings in lower case are upper-cased; enumerated attributes (Patient's Sex: M, F, O) keep
  only defined terms;
- text over its VR's length is cut to it (descriptions, names), except identifiers (Patient ID,
  Accession Number, Study ID, ...), which are never altered: an invalid identifier is emptied;
- anything else invalid is emptied when the attribute is type 2 in the Patient or General Study
  module (PS3.3 C.7.1.1, C.7.2.1: present, possibly empty) and removed otherwise;
- type 2 attributes of those modules that are absent are added empty (:func:`add_type2`);
- Specific Character Set: an empty value means the default repertoire (PS3.3 C.12.1.1.2) and is
  removed; an unknown term becomes ``ISO_IR 192`` (UTF-8) when text is not plain ASCII, else removed.

No identifier is invented: a missing or invalid UID stays the caller's error. Each change is
described by attribute keyword and rule, never by value (values may be patient data).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import MAX_VALUE_LEN, VALIDATORS

#: Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1).
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: Identifiers: never shortened or rewritten, only kept or emptied.
IDENTIFIERS = frozenset({"PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "IssuerOfPatientID",
                         "AdmissionID", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID"})
#: Enumerated values (PS3.3 C.7.1.1 and friends).
ENUMERATED = {"PatientSex": {"M", "F", "O"}, "PatientSexNeutered": {"ALTERED", "UNALTERED"},
              "PatientIdentityRemoved": {"YES", "NO"}, "QualityControlSubject": {"YES", "NO"}}
_TEXT = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_ISO_IR = (6, 100, 101, 109, 110, 144, 127, 126, 138, 148, 203, 13, 166)  # PS3.3 C.12.1.1.2 defined terms
_CHARSETS = frozenset({f"ISO_IR {n}" for n in (*_ISO_IR, 192)} | {"GB18030", "GBK", ""}
                      | {f"ISO 2022 IR {n}" for n in (*_ISO_IR, 87, 159, 149, 58)})


# ------------------------------------------------------------------------------------- dates, times
def _date(text: str) -> str | None:
    digits = re.fullmatch(r"(\d{4})[-./]?(\d{2})[-./]?(\d{2})", text.strip())
    if not digits:
        return None
    try:
        return _dt.date(*map(int, digits.groups())).strftime("%Y%m%d")
    except ValueError:
        return None


def _time(text: str) -> str | None:
    m = re.fullmatch(r"(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?", text.strip())
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return None
    return hh + (mm or "") + (ss or "") + (frac or "")


def _datetime(text: str) -> str | None:
    m = re.fullmatch(r"(\d{4}-?\d{2}-?\d{2})(?:[T ]?(\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?))?"
                     r"([+-]\d{2}:?\d{2})?", text.strip())
    if not m:
        return None
    date = _date(m.group(1))
    time = _time(m.group(2)) if m.group(2) else ""
    zone = (m.group(3) or "").replace(":", "")
    if date is None or time is None or (zone and (int(zone[1:3]) > 14 or int(zone[3:]) > 59)):
        return None
    return date + time + zone


_DATE_FIX = {"DA": _date, "TM": _time, "DT": _datetime}


# ------------------------------------------------------------------------------------- one value
def _valid(vr: str, value: str) -> bool:
    validator = VALIDATORS.get(vr)
    if validator is None:
        return True
    try:
        ok, _ = validator(vr, value)
    except Exception:  # a validator meeting an odd type
        return False
    if vr in _DATE_FIX and value:
        return _DATE_FIX[vr](value) == value  # a real date/time, written without separators
    return bool(ok) and not _CONTROL.search(value)


def _fix_value(keyword: str, vr: str, value: str) -> tuple[str | None, str]:
    """(the value to keep or None to drop, the rule applied or "" when unchanged)."""
    allowed = ENUMERATED.get(keyword)
    if allowed is not None:
        if value in allowed or value == "":
            return value, ""
        if value.strip().upper() in allowed:
            return value.strip().upper(), "normalised to a defined term"
        return None, f"not one of the defined terms ({', '.join(sorted(allowed))})"
    if _valid(vr, value):
        return value, ""
    if keyword in IDENTIFIERS:
        return None, f"not a valid {vr} value (identifiers are never altered)"
    if vr in _DATE_FIX:
        fixed = _DATE_FIX[vr](value)
        if fixed is not None:
            return fixed, f"rewritten in the DICOM {vr} form"
        return None, f"not a valid {vr} {'date' if vr == 'DA' else 'time' if vr == 'TM' else 'date-time'}"
    cleaned = _CONTROL.sub("", value)
    if vr == "CS":
        cleaned = cleaned.strip().upper()
    if vr == "PN":
        cleaned = "=".join(group[:64] for group in cleaned.split("="))
    elif vr in MAX_VALUE_LEN and vr not in ("DS", "IS", "UI", "AE", "CS"):
        cleaned = cleaned[: MAX_VALUE_LEN[vr]]
    if cleaned != value and _valid(vr, cleaned):
        return cleaned, "cut to its maximum length or cleared of control characters"
    return None, f"not a valid {vr} value"


# ------------------------------------------------------------------------------------- datasets
def _charset(ds: Dataset, tags: list, notes: list[str]) -> None:
    if "SpecificCharacterSet" not in ds:
        return
    raw = ds.SpecificCharacterSet
    terms = [str(t or "").strip() for t in (raw if isinstance(raw, MultiValue) else [raw])]
    if all(t in _CHARSETS for t in terms) and any(terms):
        return
    if all(_is_ascii(ds[t].value) for t in tags if ds[t].VR in ("LO", "LT", "PN", "SH", "ST", "UC", "UT")):
        del ds.SpecificCharacterSet
        notes.append("SpecificCharacterSet removed (empty or unknown; the text is plain ASCII, the default "
                     "repertoire)")
    else:
        ds.SpecificCharacterSet = "ISO_IR 192"
        notes.append("SpecificCharacterSet set to ISO_IR 192 (UTF-8) (empty or unknown, and the text is not "
                     "plain ASCII)")


def _is_ascii(value) -> bool:
    values = value if isinstance(value, (list, MultiValue)) else [value]
    return all(str(v if v is not None else "").isascii() for v in values)


def repair_header(ds: Dataset, *, keep: Iterable[str] = ()) -> list[str]:
    """Repair the top-level attributes of ``ds`` in place (rules in the module docstring).

    ``keep`` names attributes left untouched (the caller checks them, e.g. UIDs it must not alter).
    Returns one note per change, naming the attribute and the rule, never its value.
    """
    tags = [t for t in ds.keys() if t.group not in (0x0002, 0x7FE0) and not 0x6000 <= t.group <= 0x60FF]
    notes: list[str] = []
    for tag in tags:  # decode the text with the file's own character set before it may change
        try:
            ds[tag]
        except Exception:  # a value pydicom cannot convert (DS '70kg', IS '1.5')
            keyword = keyword_for_tag(tag) or str(tag)
            del ds[tag]
            if keyword in TYPE2:
                setattr(ds, keyword, "")
            notes.append(f"{keyword} {'emptied' if keyword in TYPE2 else 'removed'} (its value cannot be read)")
    _charset(ds, [t for t in tags if t in ds], notes)
    skip = set(keep) | {"SpecificCharacterSet"}
    for tag in tags:
        if tag not in ds:
            continue
        elem = ds[tag]
        keyword = elem.keyword
        if not keyword or keyword in skip or elem.VR not in _TEXT or elem.value is None:  # sequences: not text
            continue
        multi = isinstance(elem.value, (list, MultiValue))
        values = list(elem.value) if multi else [elem.value]
        kept, rules = [], []
        for v in values:
            text = str(v) if v is not None else ""
            fixed, rule = _fix_value(keyword, elem.VR, text)
            if rule:
                rules.append(rule)
            if fixed is not None:
                kept.append(fixed)
        if not rules:
            continue
        if kept and any(k for k in kept):
            elem.value = kept if multi else kept[0]
            notes.append(f"{keyword} {rules[0]}")
        elif keyword in TYPE2:
            elem.value = ""
            notes.append(f"{keyword} emptied ({rules[0]}; type 2, kept present)")
        else:
            del ds[elem.tag]
            notes.append(f"{keyword} removed ({rules[0]}; type 3)")
    return notes


def add_type2(ds: Dataset) -> list[str]:
    """Add the Patient and General Study type 2 attributes that ``ds`` lacks, empty (PS3.3 C.7.1.1,
    C.7.2.1); one note per attribute added."""
    notes = []
    for keyword in TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, "")
            notes.append(f"{keyword} added empty (absent in the source; type 2)")
    return notes
