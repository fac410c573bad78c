"""The instruction parser: plain words in, one `Decision` out. Pure: no I/O, no clock but `now`.

Order of the checks matters and is the policy: the mode ("arm away", "I'm home", "good night") and
control ("pause the lobby camera", "stop the fire alerts", "what are you watching for?") first,
because they reuse words the others need; then standing rules ("alert me if ..."), then questions
about the past (memory), delegated heavy work, and questions about now. Anything left gets kind
`unknown` and an answer that says what the appliance can do. `edge explain` prints the decision as
JSON (DESIGN.md contract).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from datetime import time as dtime
from typing import Any, Literal

from edge.config.models import DEFAULT_MODES, RuleConfig
from edge.instructions.vocabulary import UNITS_S, find_labels, number, spoken, words

Kind = Literal["rule", "question", "memory", "control", "delegate", "unknown"]
AREA = {"fire", "smoke"}
FIRE_REPEAT_S = 10.0

HELP = (
    'I can watch for things and alert you ("alert me if a fire breaks out", "tell me when someone is '
    'at the door after 22:00"), answer about now ("how many people are in the lobby?") and the past '
    '("who appeared in the last five minutes?"), pause or resume cameras, switch modes ("arm away", '
    '"I\'m home", "good night", "what mode are you in?"), and hand heavy work to the blue loop '
    '("describe what is happening", "write an incident report", "what does the sign say?").'
)


@dataclass(frozen=True, slots=True)
class Context:
    """What the parser may refer to: the appliance's labels, cameras, zones and runtime rules."""

    labels: frozenset[str]
    cameras: tuple[str, ...] = ()
    zones: dict[str, dict[str, list[tuple[float, float]]]] = field(default_factory=dict)
    """camera -> zone name -> polygon."""
    rules: tuple[tuple[str, str, tuple[str, ...] | None, str], ...] = ()
    """(name, label, cameras or None, origin) of every active rule."""
    modes: tuple[str, ...] = ()
    """The appliance's modes (empty: the default home, away, night)."""
    lines: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """camera -> its line (tripwire) names."""


@dataclass(slots=True)
class Decision:
    kind: Kind
    summary: str
    label: str | None = None
    cameras: list[str] | None = None
    rule: dict[str, Any] | None = None
    task: str | None = None
    since: float | None = None
    """memory: the start of the time window (epoch seconds), None for 'ever'."""
    limit: int | None = None
    """memory: 'which two people' -> 2."""
    form: str | None = None
    """question: 'count' or 'any'; memory: 'list', 'last_end', 'any', 'digest'."""
    rules: list[str] = field(default_factory=list)
    """control remove_rule: the rule names to remove."""
    every_s: float | None = None
    """control digest_on: the period of a scheduled digest ('every hour' -> 3600)."""
    mode: str | None = None
    """control set_mode: the mode to switch to ('arm away' -> 'away')."""
    zone: str | None = None
    """question: the camera zone it asks about ('how many people are in the loading dock?')."""
    line: str | None = None
    """question: the camera line it asks about ('how many people came in through the side gate
    today?'); `form` is then line_in, line_out or line_both."""

    def contract(self) -> dict[str, Any]:
        """The `edge explain` JSON (DESIGN.md)."""
        return {
            "kind": self.kind,
            "summary": self.summary,
            "label": self.label,
            "cameras": self.cameras,
            "rule": self.rule,
            "task": self.task,
        }

    def rule_config(self) -> RuleConfig:
        """The rule of a `rule` decision as the RuleConfig it becomes (keys the parser left None take
        their defaults); pydantic's ValidationError when it is not a valid rule."""
        if self.rule is None:
            raise ValueError(f"a {self.kind} decision has no rule")
        return RuleConfig.model_validate({k: v for k, v in self.rule.items() if v is not None})


# -- patterns ---------------------------------------------------------------------------------------

RULE_START = re.compile(
    r"^(?:please\s+)?(?:alert|notify|warn|tell|message|ping|inform|call|text|page|wake)\s+(?:me|us|the\s+\w+)\b"
    r"|^(?:please\s+)?let\s+(?:me|us)\s+know\b|^(?:please\s+)?(?:watch|look)\s+(?:out\s+)?for\b"
    r"|^(?:please\s+)?keep\s+an\s+eye\s+(?:out\s+)?(?:for|on)\b|^(?:please\s+)?send\s+(?:me\s+)?an?\s+alert\b"
    r"|^(?:please\s+)?(?:raise|give\s+me)\s+an?\s+alarm\b|^(?:please\s+)?(?:if|when|whenever)\s+.+\b(?:alert|notify|tell)\s+me\b"
)
LIST_RULES = re.compile(
    r"what\s+(?:are\s+you|do\s+you|are\s+we)\s+(?:watching|looking|monitoring|alerting)"
    r"|which\s+rules|list\s+(?:the\s+|your\s+|all\s+)?(?:rules|alerts|instructions)|show\s+(?:me\s+)?(?:the\s+)?rules"
    r"|what\s+rules|what\s+will\s+you\s+alert"
)
REMOVE_RULE = re.compile(
    r"^(?:please\s+)?(?:stop|cancel|remove|delete|forget|drop|disable)\s+(?:the\s+|all\s+|my\s+)?(?:(?P<what>[\w\s-]+?)\s+)?"
    r"(?:alerts?|rules?|notifications?|warnings?|alarms?)\b"
    r"|^(?:please\s+)?(?:stop|quit)\s+(?:alerting|notifying|telling)\s+me\s+about\s+(?P<what2>[\w\s-]+)"
    r"|^(?:please\s+)?(?:don't|do\s+not)\s+(?:alert|notify|tell)\s+me\s+(?:about|when|if)\s+(?P<what3>[\w\s-]+)"
)
ALERTS_OFF = re.compile(
    r"^(?:please\s+)?(?:stop|mute|silence|disable|turn\s+off|switch\s+off)\s+(?:the\s+)?(?:alerting|alerts|notifications)\s+"
    r"(?:on|for|from|at)\b|^(?:please\s+)?mute\b"
)
ALERTS_ON = re.compile(
    r"^(?:please\s+)?(?:start|unmute|enable|turn\s+on|switch\s+on|resume)\s+(?:the\s+)?(?:alerting|alerts|notifications)\b"
    r"|^(?:please\s+)?unmute\b"
)
PAUSE = re.compile(
    r"^(?:please\s+)?(?:pause|stop\s+(?:watching|detecting|detection|looking\s+at)|turn\s+off|switch\s+off|disable)\b"
)
RESUME = re.compile(
    r"^(?:please\s+)?(?:resume|unpause|continue|restart|start\s+(?:watching|detecting|detection)|turn\s+on|switch\s+on|enable)\b"
)
MEMORY = re.compile(
    r"\b(?:appeared|came|come\s+in|entered|left|visited|passed|walked|arrived|went|showed\s+up|was\s+there|were\s+there"
    r"|has\s+there\s+been|have\s+there\s+been|did\s+(?:anyone|anybody|someone|somebody|you\s+see)|have\s+you\s+seen"
    r"|was\s+(?:anyone|anybody|someone|somebody|a|an|any)|were\s+(?:any|there)|happened\s+(?:today|yesterday)"
    r"|earlier|so\s+far\s+today|since\s+(?:this|midnight|\d)|in\s+the\s+(?:last|past)|last\s+(?:hour|night)|today|yesterday"
    r"|seen\s+(?:today|recently)|when\s+did|when\s+was\s+the\s+last|last\s+time)\b"
)
DELEGATE = [
    (
        "ui_html",
        re.compile(
            r"\b(?:html|reproduce|recreate|rebuild|mock\s*up|web\s*page)\b|\bscreen\b.*\b(?:as|into|to)\b"
        ),
    ),
    (
        "read_text",
        re.compile(
            r"\bread\b|\bwhat\s+does\s+(?:the|that|this)\s+\w+\s+say\b|\bwhat\s+is\s+written\b|\btranscribe\b"
            r"|\bwhat(?:'s|\s+is)\s+the\s+(?:text|number|plate|licen[cs]e)\b|\b(?:text|writing|sign|label)\s+(?:on|say)\b|\bocr\b"
        ),
    ),
    ("report", re.compile(r"\breport\b|\bsummar(?:y|ise|ize)\b|\bwrite\s+up\b|\bincident\b")),
    (
        "describe",
        re.compile(
            r"\bdescribe\b|\bexplain\b|\bwhat\s+(?:is|are)\s+(?:\w+\s+){0,3}doing\b|\bwhat(?:'s|\s+is)\s+(?:going\s+on|happening)\b"
            r"|\bwhat\s+happened\b|\bwhy\b|\btell\s+me\s+about\b|\bwhat\s+do\s+you\s+see\b|\blook\s+at\b|\bcheck\s+(?:what|if)\b"
        ),
    ),
]
COUNT = re.compile(r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b|\bhow\s+much\b")
ANY = re.compile(
    r"^(?:is|are|was|were)\s+(?:there\s+)?(?:anyone|anybody|someone|somebody|any|a|an|the|people|\w+s?)\b"
    r"|^(?:any|anyone|anybody|someone|somebody)\b|\bis\s+(?:anyone|anybody|someone|somebody)\b|\bdo\s+you\s+see\b"
    r"|\bcan\s+you\s+see\b"
)
NARRATE_OFF = re.compile(
    r"^(?:please\s+)?(?:stop|end|cancel|quit|halt|finish|turn\s+off|switch\s+off|no\s+more|enough)\b.*?"
    r"\b(?:narrat\w*|commentat\w*|commentary|play-by-play)"
)
NARRATE_ON = re.compile(
    r"\bnarrat(?:e|ing|ion)\b|\bcommentat(?:e|ing)\b|\bcommentary\b|\bplay-by-play\b"
    r"|^(?:please\s+)?(?:tell|keep)\s+me\s+what\s+(?:happens|goes\s+on)\b"
    r"|^(?:please\s+)?tell\s+me\s+what\s+(?:is\s+happening|is\s+going\s+on)\b.*\bas\s+it\s+happens\b"
    r"|^(?:please\s+)?keep\s+me\s+(?:posted|updated|informed)\b"
)
_UNITS = "|".join(UNITS_S)
DIGEST = re.compile(
    rf"\bdigests?\b|\b(?:recap|roundup|round-up)\b"
    rf"|\bsummary\s+of\s+(?:the\s+)?(?:(?:last|past)\s+(?:[\w.-]+\s+)?(?:{_UNITS})\b|today\b|this\s+morning\b|the\s+day\b)"
    rf"|\b(?:hourly|daily|nightly)\s+(?:summary|summaries)\b"
)
DIGEST_OFF = re.compile(
    r"^(?:please\s+)?(?:stop|end|cancel|quit|halt|turn\s+off|switch\s+off|no\s+more|don't\s+send|do\s+not\s+send)"
    r"\b.*?\b(?:digests?|summaries|summary|recaps?|roundups?)\b"
)
DIGEST_EVERY = re.compile(
    rf"\bevery\s+(?:[\w.-]+\s+)?(?:{_UNITS})\b|\b(?:hourly|daily|nightly|each\s+(?:hour|day))\b"
)
START_OF_BREAK = re.compile(r"\bbreaks?\s+out\b|\bstarts?\b")
_WE = r"(?:i'm|i\s+am|we're|we\s+are)"
MODE_QUERY = re.compile(
    r"\b(?:what|which)\s+mode\b|\bcurrent\s+mode\b|\bmode\s+are\s+you\s+in\b"
    r"|^(?:are\s+you|is\s+(?:the\s+)?(?:system|alarm|house|appliance))\s+(?:armed|disarmed)\b"
)
MODE_WORDS = [  # (pattern, mode): phrases that mean a default mode
    (re.compile(r"^(?:please\s+)?disarm\b"), "home"),
    (re.compile(rf"^(?:honey\s+)?{_WE}\s+(?:back\s+)?home\b|^{_WE}\s+back\b"), "home"),
    (
        re.compile(
            rf"^{_WE}\s+(?:leaving|going\s+(?:out|away)|heading\s+out|off\s+out|out|away)\b"
            r"|^(?:going|heading)\s+out\b|^leaving(?:\s+now)?$"
        ),
        "away",
    ),
    (
        re.compile(
            rf"^good\s*night\b|^nighty?\s+night\b|^{_WE}\s+going\s+to\s+(?:bed|sleep)\b|^off\s+to\s+bed\b"
        ),
        "night",
    ),
]
MODE_ARM = re.compile(
    r"^(?:please\s+)?arm(?:\s+(?:the\s+)?(?:system|alarm|house|cameras?|appliance))?(?:\s+(?:in|to|for))?"
    r"(?:\s+(?P<mode>[a-z0-9][\w-]*?))?(?:\s+mode)?(?:\s+(?:now|please))?$"
)
MODE_NAMED = re.compile(  # the word "mode" is said: any name is taken (an unknown one is refused by name)
    r"^(?:please\s+)?(?:(?:switch|change|set|go|put|turn)\s+(?:(?:the\s+)?(?:mode|system|alarm)\s+)?"
    r"(?:to|into|in|on)\s+(?:the\s+)?|(?:enter|activate|enable|start|use)\s+(?:the\s+)?)?"
    r"(?P<mode>[a-z0-9][\w-]*)\s+mode(?:\s+(?:on|now|please))?$"
)
MODE_SWITCH = re.compile(  # without the word "mode": only a configured mode's name counts
    r"^(?:please\s+)?(?:switch|change|set|go|put)\s+(?:(?:the\s+)?(?:mode|system|alarm)\s+)?(?:to|into|in)\s+"
    r"(?P<mode>[a-z0-9][\w-]*)$"
)
MODE_ALIASES = {"stay": "home", "disarmed": "home", "sleep": "night", "bed": "night", "out": "away"}
"""Alarm-panel words for the default modes ("arm stay"), used when no mode has that name."""


def parse(text: str, camera: str | None, ctx: Context, now: datetime | None = None) -> Decision:
    now = now or datetime.now()
    low = " ".join(words(text.replace("’", "'")))
    raw = text.lower().replace("’", "'")
    labels = find_labels(low, set(ctx.labels))
    cameras, zone = _places(low, camera, ctx)
    label = labels[0] if labels else None

    if mode := _mode(low, ctx):
        return mode
    if narration := _narration(low, cameras, now):
        return narration
    if LIST_RULES.search(low):
        return Decision("control", "list the standing rules", task="list_rules")
    if (m := REMOVE_RULE.search(low)) and not ALERTS_OFF.search(low):
        what = next((g for g in m.groups() if g), "") or ""
        return _remove(what, labels, cameras, ctx)
    if ALERTS_OFF.search(low) or (low.startswith(("stop alerting", "stop alerts")) and cameras):
        return _switch("alerts_off", cameras, ctx, "stop alerting on")
    if ALERTS_ON.search(low):
        return _switch("alerts_on", cameras, ctx, "alert again on")
    if RESUME.search(low) and not labels:
        return _switch("resume", cameras, ctx, "resume watching")
    if PAUSE.search(low) and not labels:
        return _switch("pause", cameras, ctx, "pause watching")

    if RULE_START.search(low) or _conditional_rule(low):
        if label is None:
            return Decision("unknown", "a standing rule, but about nothing I can detect. " + HELP)
        return _rule(low, raw, label, cameras, zone, ctx)

    for task, pattern in DELEGATE:
        if pattern.search(low) and not (task == "describe" and COUNT.search(low)):
            if (
                task == "describe"
                and MEMORY.search(low)
                and label
                and not re.search(r"\bdescribe|explain\b", low)
            ):
                break  # "what happened to the person who left?" is still heavy; "did anyone come?" is memory
            return Decision(
                "delegate",
                f"hand to the blue loop: {spoken(task)}",
                label=label,
                cameras=cameras,
                task=task,
            )

    if line_question := _line_question(low, label, cameras, ctx):
        return line_question

    if MEMORY.search(low) and (label or re.search(r"\b(?:who|anything|anyone|what)\b", low)):
        return _memory(low, label or "person", cameras, now)

    if COUNT.search(low) or ANY.search(low) or (raw.strip().endswith("?") and label):
        if label is None:
            return Decision("unknown", "a question about something I cannot detect. " + HELP)
        form = "count" if COUNT.search(low) else "any"
        where = ", ".join(cameras) if cameras else "every camera"
        if zone is not None:
            where = f"the {spoken(zone[1])} on {where}"
        return Decision(
            "question",
            f"{'count' if form == 'count' else 'look for'} {label} {'in' if zone else 'on'} {where} now",
            label=label,
            cameras=cameras,
            form=form,
            zone=zone[1] if zone else None,
        )
    return Decision("unknown", HELP)


LINE_IN = re.compile(r"\b(?:c[ao]me?\s+in|went\s+in|walked\s+in|got\s+in|entered|arrived|in\s+through)\b")
LINE_OUT = re.compile(r"\b(?:went\s+out|came\s+out|walked\s+out|got\s+out|left|exited|out\s+through)\b")
LINE_ANY = re.compile(r"\b(?:crossed|passed|went\s+through|came\s+through|walked\s+through|through)\b")


def _line_question(low: str, label: str | None, cameras: list[str] | None, ctx: Context) -> Decision | None:
    """'how many people came in through the side gate today?': a line's counts since midnight."""
    padded = f" {low} "
    for cam, names in ctx.lines.items():
        if cameras and cam not in cameras:
            continue
        for name in names:
            said = spoken(name)
            if f" {said} " not in padded and f" {name} " not in padded:
                continue
            way = "in" if LINE_IN.search(low) else "out" if LINE_OUT.search(low) else None
            if way is None and not LINE_ANY.search(low):
                return None
            thing = label or "person"
            what = {"in": "came in through", "out": "went out through", None: "crossed"}[way]
            return Decision("question", f"count {thing} that {what} the {said} on {cam} today", label=thing,
                            cameras=[cam], form=f"line_{way or 'both'}", line=name)  # fmt: skip
    return None


def _narration(low: str, cameras: list[str] | None, now: datetime) -> Decision | None:
    """A running commentary ('narrate the lobby camera', 'stop narrating') and digests ('give me a
    digest', 'summary of the last hour', 'send me a digest every hour', 'stop the digest')."""
    where = ", ".join(cameras) if cameras else "every camera"
    if NARRATE_OFF.search(low):
        return Decision("control", f"stop narrating {where}", cameras=cameras, task="narrate_off")
    if DIGEST_OFF.search(low) and DIGEST.search(low.replace("summaries", "digests")):
        return Decision(
            "control", f"stop the scheduled digests of {where}", cameras=cameras, task="digest_off"
        )
    if DIGEST.search(low) and not re.search(r"\b(?:incident|report)\b", low):
        if DIGEST_EVERY.search(low):
            every = _seconds(low, "every") or (
                86400.0 if re.search(r"\b(?:daily|nightly|each\s+day)\b", low) else 3600.0
            )
            return Decision(
                "control", f"send a digest of {where} every {_duration(every)}", cameras=cameras,
                task="digest_on", every_s=every,
            )  # fmt: skip
        window = re.sub(r"\b(?:for|of|from|over)\s+the\s+(last|past)\b", r"in the \1", low)
        since = _memory(window, "person", cameras, now).since
        since = now.timestamp() - 3600.0 if since is None else since
        return Decision(
            "memory", f"a digest of what happened on {where} since {datetime.fromtimestamp(since):%H:%M:%S}",
            cameras=cameras, since=since, form="digest",
        )  # fmt: skip
    if NARRATE_ON.search(low):
        return Decision(
            "control", f"narrate {where}: a commentary line whenever something changes", cameras=cameras,
            task="narrate_on",
        )  # fmt: skip
    return None


def _mode(low: str, ctx: Context) -> Decision | None:
    """The mode: 'arm away', 'disarm', "I'm home", 'going out', 'good night', 'switch to night mode',
    'what mode are you in?'. A name said with the word 'mode' is taken as it is (the control surface
    refuses an unknown one, naming the modes); without it, only a configured mode's name."""
    modes = ctx.modes or DEFAULT_MODES
    if MODE_QUERY.search(low):
        return Decision("control", "say which mode is on", task="mode_state")
    for pattern, name in MODE_WORDS:
        if pattern.search(low):
            return _set_mode(name)
    if m := MODE_ARM.match(low):
        word = m.group("mode")
        return _set_mode(_mode_name(word, modes) if word else "away")
    if m := MODE_NAMED.match(low):
        return _set_mode(_mode_name(m.group("mode"), modes))
    if (m := MODE_SWITCH.match(low)) and m.group("mode") in modes:
        return _set_mode(m.group("mode"))
    return None


def _mode_name(word: str, modes: tuple[str, ...]) -> str:
    alias = MODE_ALIASES.get(word)
    return alias if alias is not None and word not in modes and alias in modes else word


def _set_mode(name: str) -> Decision:
    return Decision("control", f"switch to {name} mode", task="set_mode", mode=name)


def _conditional_rule(low: str) -> bool:
    """'if a car stops at the gate, alert me' / 'whenever someone enters, notify me'."""
    return bool(re.match(r"^(?:if|when|whenever|as\s+soon\s+as)\b", low)) and bool(
        re.search(r"\b(?:alert|notify|tell|warn|ping|message|call)\s+me\b|\blet\s+me\s+know\b", low)
    )


def _places(low: str, camera: str | None, ctx: Context) -> tuple[list[str] | None, tuple[str, str] | None]:
    """Cameras (and a camera zone) the text names: 'the lobby camera', 'camera 2', 'the loading dock'."""
    if camera:
        found = [camera]
    else:
        found = []
        padded = f" {low} "
        for name in ctx.cameras:
            if f" {spoken(name)} " in padded or f" {name} " in padded:
                found.append(name)
        for m in re.finditer(r"\b(?:camera|cam)\s*(\d+)\b", low):
            index = int(m.group(1))
            for name in ctx.cameras:
                if re.fullmatch(rf"(?:camera|cam)?[-_ ]?0*{index}", name):
                    found.append(name)
                    break
            else:
                if 1 <= index <= len(ctx.cameras):
                    found.append(ctx.cameras[index - 1])
    zone = None
    padded = f" {low} "
    for cam, zones in ctx.zones.items():
        for zname in zones:
            if f" {spoken(zname)} " in padded and (not found or cam in found):
                zone = (cam, zname)
                found = found or [cam]
    unique = list(dict.fromkeys(found))
    return (unique or None), zone


def _seconds(text: str, after: str) -> float | None:
    """'for more than a minute' / 'for 30 seconds' / 'every 5 min' after the word `after`."""
    m = re.search(
        rf"\b{after}\s+(?:(?:more|longer)\s+than\s+|over\s+|at\s+least\s+)?(?:(half)\s+an?\s+)?"
        rf"([\w.-]+)?\s*({'|'.join(UNITS_S)})\b",
        text,
    )
    if not m:
        return None
    if m.group(1):
        return UNITS_S[m.group(3)] / 2
    value = number(m.group(2)) if m.group(2) else 1.0
    if value is None:
        return None
    return value * UNITS_S[m.group(3)]


def _clock(token: str, pm_hint: bool = False) -> dtime | None:
    m = re.fullmatch(r"(\d{1,2})(?::|\.|h)?(\d{2})?\s*(am|pm)?", token.strip())
    if not m:
        return None
    hour, minute = int(m.group(1)), int(m.group(2) or 0)
    if m.group(3) == "pm" and hour < 12:
        hour += 12
    elif m.group(3) == "am" and hour == 12:
        hour = 0
    elif m.group(3) is None and pm_hint and hour < 12:
        hour += 12
    if hour > 23 or minute > 59:
        return None
    return dtime(hour, minute)


def _schedule(raw: str) -> tuple[list[dict[str, Any]] | None, str]:
    """'after 22:00', 'between 9 and 17', 'at night', 'on weekends' -> schedule windows and words."""
    days = None
    words_ = ""
    if re.search(r"\bweekends?\b", raw):
        days, words_ = ["sat", "sun"], " on weekends"
    elif re.search(r"\bweekdays?\b|\bworking\s+days\b", raw):
        days, words_ = ["mon", "tue", "wed", "thu", "fri"], " on weekdays"
    clock = r"\d{1,2}(?:[:.h]\d{2})?\s*(?:am|pm)?"
    start = end = None
    if (m := re.search(rf"\bbetween\s+({clock})\s+(?:and|-|to)\s+({clock})", raw)) or (
        m := re.search(rf"\bfrom\s+({clock})\s+(?:to|until|till)\s+({clock})", raw)
    ):
        start, end = _clock(m.group(1)), _clock(m.group(2), pm_hint=True)
    elif m := re.search(rf"\bafter\s+({clock})", raw):
        start = _clock(m.group(1), pm_hint=True)
        end = dtime(6, 0) if start and start.hour >= 12 else dtime(23, 59, 59)
    elif m := re.search(rf"\bbefore\s+({clock})", raw):
        start, end = dtime(0, 0), _clock(m.group(1))
    elif re.search(r"\b(?:at|during\s+the|over|by)\s+night\b|\bovernight\b|\bnightly\b|\btonight\b", raw):
        start, end = dtime(22, 0), dtime(6, 0)
    elif re.search(r"\bduring\s+the\s+day\b|\bin\s+the\s+daytime\b|\bby\s+day\b", raw):
        start, end = dtime(7, 0), dtime(19, 0)
    if start is None and days is None:
        return None, ""
    window: dict[str, Any] = {}
    if days:
        window["days"] = days
    if start is not None and end is not None:
        window["start"], window["end"] = start.strftime("%H:%M:%S"), end.strftime("%H:%M:%S")
        words_ = f" from {start:%H:%M} to {end:%H:%M}" + words_
    return [window], words_


def _rule(
    low: str, raw: str, label: str, cameras: list[str] | None, zone: tuple[str, str] | None, ctx: Context
) -> Decision:
    area = label in AREA
    dwell = _seconds(low, "for") or _seconds(low, "longer than") or _seconds(low, "more than") or 0.0
    if re.search(r"\b(?:stays?|remains?|loiters?|lingers?|parked|waits?|stands?)\b", low) and not dwell:
        dwell = 30.0
    repeat = _seconds(low, "every") or (FIRE_REPEAT_S if area else 0.0)
    if re.search(r"\b(?:only\s+once|just\s+once|once)\b", low):
        repeat = 0.0
    schedule, _ = _schedule(raw)
    severity = (
        "critical"
        if area or re.search(r"\b(?:urgent|emergency|critical|immediately|asap)\b", low)
        else "warning"
    )
    if re.search(r"\b(?:info|fyi|low\s+priority|quietly)\b", low) and not area:
        severity = "info"
    where = zone[0] if zone else None
    names = [label.replace(" ", "-"), *(cameras or ["any"])]
    if zone:
        names.append(zone[1])
    base = "-".join(names)[:48].strip("-")
    rule: dict[str, Any] = {
        "name": _unique(base, ctx),
        "label": label,
        "cameras": cameras,
        "zone": ctx.zones[where][zone[1]] if zone and where else None,
        "zone_name": zone[1] if zone else None,
        "schedule": schedule,
        "dwell_s": dwell,
        "repeat_s": repeat,
        "severity": severity,
    }
    if area:
        rule["text"] = "Fire! Flames seen on {camera}" if label == "fire" else "Smoke seen on {camera}"
        rule["verify"] = True  # verified on the device: provisional at once, then confirmed or retracted
    summary = rule_words(rule)
    return Decision("rule", summary, label=label, cameras=cameras, rule=rule)


def rule_words(rule: dict[str, Any]) -> str:
    """A rule said back in words: 'I will alert you when I see fire on any camera, and repeat ...'."""
    label = rule["label"]
    thing = {"person": "someone", "fire": "fire", "smoke": "smoke"}.get(label, f"a {label}")
    where = ", ".join(rule.get("cameras") or []) or "any camera"
    if rule.get("zone_name"):
        where = f"the {rule['zone_name'].replace('-', ' ')} on {where}"
    text = (
        f"I will alert you when I see {thing} on {where}"
        if not rule.get("zone_name")
        else (f"I will alert you when I see {thing} in {where}")
    )
    if rule.get("line"):  # a crossing rule
        way = f" ({rule['direction']})" if rule.get("direction") else ""
        line = spoken(rule["line"])
        text = f"I will alert you when I see {thing} cross the {line}{way} on {where}"
    if rule.get("dwell_s"):
        text += f" for more than {_duration(rule['dwell_s'])}"
    for window in rule.get("schedule") or []:
        if "start" in window:
            text += f", from {window['start'][:5]} to {window['end'][:5]}"
        if "days" in window:
            text += f", on {', '.join(window['days'])}"
    if rule.get("repeat_s"):
        text += f", and repeat every {_duration(rule['repeat_s'])} while it lasts"
    return text + "."


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        n = int(seconds // 3600)
        return f"{n} hour{'s' if n != 1 else ''}"
    if seconds >= 60 and seconds % 60 == 0:
        n = int(seconds // 60)
        return "a minute" if n == 1 else f"{n} minutes"
    return f"{seconds:g} s"


def _unique(base: str, ctx: Context) -> str:
    taken = {name for name, *_ in ctx.rules}
    name = re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-_") or "rule"
    if name not in taken:
        return name
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _remove(what: str, labels: list[str], cameras: list[str] | None, ctx: Context) -> Decision:
    """'stop the fire alerts': the instruction/admin rules of that label (and camera), by name."""
    label = labels[0] if labels else None
    named = [r for r in ctx.rules if r[0] == what.strip().replace(" ", "-")]
    matching = named or [
        r
        for r in ctx.rules
        if (label is None or r[1] == label) and (not cameras or r[2] is None or set(cameras) & set(r[2]))
    ]
    if label is None and not named and what.strip() not in ("", "all", "my", "the"):
        return Decision("unknown", f"remove which alerts? I know no rule or label called {what.strip()!r}.")
    summary = f"remove the {label or 'all'} rules" + (f" on {', '.join(cameras)}" if cameras else "")
    return Decision(
        "control", summary, label=label, cameras=cameras, task="remove_rule", rules=[r[0] for r in matching]
    )


def _switch(action: str, cameras: list[str] | None, ctx: Context, verb: str) -> Decision:
    targets = cameras or list(ctx.cameras)
    where = ", ".join(cameras) if cameras else "every camera"
    return Decision("control", f"{verb} {where}", cameras=targets or None, task=action)


MEMORY_WINDOWS = [
    (re.compile(r"\bjust\s+now\b|\ba\s+moment\s+ago\b|\brecently\b"), 600.0),
    (re.compile(r"\blast\s+night\b"), 86400.0),
    (re.compile(r"\byesterday\b"), 2 * 86400.0),
]


def _memory(low: str, label: str, cameras: list[str] | None, now: datetime) -> Decision:
    since: float | None = None
    window_words = ""
    if m := re.search(
        rf"\b(?:in|over|during|within)\s+the\s+(?:last|past)\s+([\w.-]+\s+)?({'|'.join(UNITS_S)})\b", low
    ):
        value = number(m.group(1).strip()) if m.group(1) else 1.0
        seconds = (value or 1.0) * UNITS_S[m.group(2)]
        since = now.timestamp() - seconds
        window_words = f" in the last {_duration(seconds)}"
    elif m := re.search(rf"\blast\s+({'|'.join(UNITS_S)})\b", low):
        since = now.timestamp() - UNITS_S[m.group(1)]
        window_words = f" in the last {m.group(1)}"
    elif re.search(r"\btoday\b|\bso\s+far\b|\bsince\s+midnight\b|\bthis\s+morning\b", low):
        since = now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        window_words = " today"
    else:
        for pattern, seconds in MEMORY_WINDOWS:
            if pattern.search(low):
                since = now.timestamp() - seconds
                window_words = " recently" if seconds <= 600 else " since yesterday"
                break
    limit = None
    if (m := re.search(r"\b(?:which|what|the\s+last)\s+([\w-]+)\s+(\w+)", low)) and m.group(2) not in UNITS_S:
        limit_value = number(m.group(1))
        limit = int(limit_value) if limit_value and limit_value > 1 else None
    if re.search(r"\bwhen\s+did\b.*\b(?:leave|left|go|went|disappear|exit)", low):
        form = "last_end"
    elif re.search(r"\bwhen\s+did\b|\bwhen\s+was\b", low):
        form = "last_start"
    elif re.search(r"^(?:has|have|was|were|did|is)\b", low) or re.search(r"\bany\b", low):
        form = "any"
    else:
        form = "list"
    where = ", ".join(cameras) if cameras else "every camera"
    summary = f"look up {label} events on {where}{window_words}"
    return Decision("memory", summary, label=label, cameras=cameras, since=since, limit=limit, form=form)
