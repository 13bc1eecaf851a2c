"""Language codes as people write them, mapped to what each model needs.

`transcribe` (Whisper) and `translate` (NLLB) both take a language as ISO 639-1 (`fr`), BCP-47
(`pt-BR`, `zh-Hant`, `sr-Latn`), ISO 639-3 (`fra`) or the model's own code (`fra_Latn` for NLLB,
`fr` for Whisper). Pure functions over the codes the loaded model knows: the workers call them,
and a code no model could know is refused at submission.
"""

from __future__ import annotations

import difflib
import re

from .errors import InvalidInput

# ISO 639-1 to ISO 639-3 (ISO 639-2/T where they differ), generated from the ISO 639-3 tables.
ISO_639_1: dict[str, str] = {
    "aa": "aar", "ab": "abk", "ae": "ave", "af": "afr", "ak": "aka", "am": "amh", "an": "arg", "ar": "ara",
    "as": "asm", "av": "ava", "ay": "aym", "az": "aze", "ba": "bak", "be": "bel", "bg": "bul", "bi": "bis",
    "bm": "bam", "bn": "ben", "bo": "bod", "br": "bre", "bs": "bos", "ca": "cat", "ce": "che", "ch": "cha",
    "co": "cos", "cr": "cre", "cs": "ces", "cu": "chu", "cv": "chv", "cy": "cym", "da": "dan", "de": "deu",
    "dv": "div", "dz": "dzo", "ee": "ewe", "el": "ell", "en": "eng", "eo": "epo", "es": "spa", "et": "est",
    "eu": "eus", "fa": "fas", "ff": "ful", "fi": "fin", "fj": "fij", "fo": "fao", "fr": "fra", "fy": "fry",
    "ga": "gle", "gd": "gla", "gl": "glg", "gn": "grn", "gu": "guj", "gv": "glv", "ha": "hau", "he": "heb",
    "hi": "hin", "ho": "hmo", "hr": "hrv", "ht": "hat", "hu": "hun", "hy": "hye", "hz": "her", "ia": "ina",
    "id": "ind", "ie": "ile", "ig": "ibo", "ii": "iii", "ik": "ipk", "io": "ido", "is": "isl", "it": "ita",
    "iu": "iku", "ja": "jpn", "jv": "jav", "ka": "kat", "kg": "kon", "ki": "kik", "kj": "kua", "kk": "kaz",
    "kl": "kal", "km": "khm", "kn": "kan", "ko": "kor", "kr": "kau", "ks": "kas", "ku": "kur", "kv": "kom",
    "kw": "cor", "ky": "kir", "la": "lat", "lb": "ltz", "lg": "lug", "li": "lim", "ln": "lin", "lo": "lao",
    "lt": "lit", "lu": "lub", "lv": "lav", "mg": "mlg", "mh": "mah", "mi": "mri", "mk": "mkd", "ml": "mal",
    "mn": "mon", "mr": "mar", "ms": "msa", "mt": "mlt", "my": "mya", "na": "nau", "nb": "nob", "nd": "nde",
    "ne": "nep", "ng": "ndo", "nl": "nld", "nn": "nno", "no": "nor", "nr": "nbl", "nv": "nav", "ny": "nya",
    "oc": "oci", "oj": "oji", "om": "orm", "or": "ori", "os": "oss", "pa": "pan", "pi": "pli", "pl": "pol",
    "ps": "pus", "pt": "por", "qu": "que", "rm": "roh", "rn": "run", "ro": "ron", "ru": "rus", "rw": "kin",
    "sa": "san", "sc": "srd", "sd": "snd", "se": "sme", "sg": "sag", "sh": "hbs", "si": "sin", "sk": "slk",
    "sl": "slv", "sm": "smo", "sn": "sna", "so": "som", "sq": "sqi", "sr": "srp", "ss": "ssw", "st": "sot",
    "su": "sun", "sv": "swe", "sw": "swa", "ta": "tam", "te": "tel", "tg": "tgk", "th": "tha", "ti": "tir",
    "tk": "tuk", "tl": "tgl", "tn": "tsn", "to": "ton", "tr": "tur", "ts": "tso", "tt": "tat", "tw": "twi",
    "ty": "tah", "ug": "uig", "uk": "ukr", "ur": "urd", "uz": "uzb", "ve": "ven", "vi": "vie", "vo": "vol",
    "wa": "wln", "wo": "wol", "xh": "xho", "yi": "yid", "yo": "yor", "za": "zha", "zh": "zho", "zu": "zul",
}
ISO_639_3_TO_1 = {three: two for two, three in ISO_639_1.items()}

# Macrolanguages whose ISO code NLLB does not use: the member language NLLB was trained on.
NLLB_MEMBER = {"ara": "arb", "fas": "pes", "msa": "zsm", "nor": "nob", "lav": "lvs", "uzb": "uzn",
               "swa": "swh", "nep": "npi", "mon": "khk", "pus": "pbt", "orm": "gaz", "que": "quy",
               "sqi": "als", "aze": "azj", "yid": "ydd", "kur": "kmr", "mlg": "plt", "kau": "knc",
               "ful": "fuv", "ori": "ory", "aym": "ayr"}
# For a language NLLB writes in several scripts: the one meant when none is named, and regions
# that name one (Chinese as written in Taiwan, Hong Kong and Macao is Traditional).
DEFAULT_SCRIPT = {"zho": "Hans", "kas": "Arab", "knc": "Latn", "ace": "Latn", "bjn": "Latn", "taq": "Latn"}
REGION_SCRIPT = {("zho", "TW"): "Hant", ("zho", "HK"): "Hant", ("zho", "MO"): "Hant"}
# Whisper's own spelling of a few codes.
WHISPER_ALIASES = {"jv": "jw"}
COMMON_NLLB = ("eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn", "zho_Hans")

_BCP47 = re.compile(r"^(?P<lang>[a-z]{2,3})(?:[-_](?P<script>[a-z]{4}))?(?:[-_](?P<region>[a-z]{2}|\d{3}))?"
                    r"(?:[-_][a-z0-9]{1,8})*$", re.IGNORECASE)


def parse(code: str, *, field: str) -> tuple[str, str | None, str | None]:
    """(ISO 639-3 language, script, region) of a code in any of the accepted forms."""
    match = _BCP47.match(code.strip())
    if not match:
        raise InvalidInput(f"{field}: {code!r} is not a language code; give ISO 639-1 (fr), BCP-47 (pt-BR) "
                           f"or the model's own code (fra_Latn)", field=field)
    lang = match["lang"].lower()
    three = ISO_639_1.get(lang, lang) if len(lang) == 2 else lang
    script = match["script"].title() if match["script"] else None
    return three, script, match["region"].upper() if match["region"] else None


def check(code: str, *, field: str) -> None:
    """At submission: refuse what no model could take ('' means "detect it" where allowed)."""
    if code:
        parse(code, field=field)


def for_nllb(code: str, known: frozenset[str], *, field: str) -> str:
    """The NLLB code (`fra_Latn`) for `code`, among those the model knows."""
    if code in known:
        return code
    three, script, region = parse(code, field=field)
    candidates = sorted(k for k in known if k.split("_")[0] in (three, NLLB_MEMBER.get(three)))
    wanted = script or REGION_SCRIPT.get((three, region or "")) or DEFAULT_SCRIPT.get(three)
    chosen = [k for k in candidates if k.endswith("_" + wanted)] if wanted else candidates
    if not chosen:
        raise InvalidInput(_unknown(field, code, candidates, known), field=field)
    if len(chosen) > 1:
        raise InvalidInput(f"{field}: {code!r} is written in several scripts here; name one: "
                           f"{', '.join(candidates)}", field=field)
    return chosen[0]


def for_whisper(code: str, known: frozenset[str], *, field: str) -> str:
    """Whisper's code (`fr`, `haw`, `yue`) for `code`, among those the model knows."""
    if code in known:
        return code
    if "_" in code and len(code.split("_")[1]) == 4:  # an NLLB code (fra_Latn): its language part
        code = code.split("_")[0]
    three, _script, _region = parse(code, field=field)
    two = ISO_639_3_TO_1.get(three, three)
    for candidate in (two, WHISPER_ALIASES.get(two, two), three):
        if candidate in known:
            return candidate
    raise InvalidInput(_unknown(field, code, [], known), field=field)


def _unknown(field: str, code: str, related: list[str], known: frozenset[str]) -> str:
    """Unknown: the codes of the same language first, then close spellings, then common ones."""
    close = difflib.get_close_matches(code, sorted(known), n=3, cutoff=0.6)
    examples = list(dict.fromkeys([*related, *close, *(c for c in COMMON_NLLB if c in known)]))[:5]
    examples = examples or sorted(known)[:5]
    return (f"{field}: unknown language code {code!r}; the model knows e.g. {', '.join(examples)}, ... "
            f"({len(known)} codes; ISO 639-1 like fr and BCP-47 like pt-BR work too)")
