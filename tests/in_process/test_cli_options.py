"""``python -m saga``'s options, read in-process: one declaration of each flag several commands share,
--db and SAGA_DB on every command, --api beside them, the worst case the help gives for compensations, and
which sagas ``list`` shows."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import signal
from pathlib import Path

import pytest

from saga.cli import UsageError, build_parser, listed, main, policies_from, settle_api_or_log
from saga.cli.options import DB_HELP
from saga.logs import MemorySagaLog, SqliteSagaLog
from saga.records import AccountRef, SagaRecord
from saga.states import SagaState
from saga.submission import submit

TRANSFER = ["--from", "alice", "--to", "bob", "--amount", "1", "--url", "http://127.0.0.1:9"]

#: Every subcommand, and the least it runs with. Each one that takes --db reads SAGA_DB in its place.
COMMANDS: dict[str, list[str]] = {
    "transfer": TRANSFER,
    "batch": ["--url", "http://127.0.0.1:9"],
    "submit": TRANSFER,
    "worker": [],
    "recover": [],
    "show": ["t-1"],
    "list": [],
    "events": ["t-1"],
    "reconcile": [],
    "serve": ["--port", "0", "--service", "bank-a=http://127.0.0.1:9"],
    "cancel": ["t-1", "--reason", "wrong amount"],
    "retry": ["t-1", "--reason", "room again"],
    "resolve": ["t-1", "--reason", "by hand", "--resolution", "moved_by_hand"],
    "demo": [],
    "simulate": [],
}
#: What they fall back on with neither --db nor SAGA_DB.
WITHOUT_LOG = {"simulate"}
SCRATCH_LOG = {"demo"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (commands,) = [action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(commands.choices)


def db_option(command: argparse.ArgumentParser) -> argparse.Action | None:
    return next((action for action in command._actions if "--db" in action.option_strings), None)


@pytest.fixture
def no_saga_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("SAGA_DB", "SAGA_API", "SAGA_API_TOKEN", "SAGA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_table_names_every_subcommand() -> None:
    assert set(subcommands()) == set(COMMANDS)


# -- a flag several commands take is one flag ----------------------------------------------------

#: A name some command gives to a flag of its own, meaning something else there: left out of the comparison.
NAMESAKES: dict[str, set[str]] = {
    # The tokens the service accepts, NAME=SECRET and repeated, not the one a client sends.
    "--api-token": {"serve"},
    # Requests to the transfers service, and reads of the accounts services: not sagas.
    "--concurrency": {"demo", "reconcile"},
    # Why a quarantined ledger is accepted: optional, beside --accept.
    "--reason": {"reconcile"},
    # A simulation's own: the first of --seeds runs, transfers per run, and how many simulated services.
    "--seed": {"simulate"},
    "--transfers": {"simulate"},
    "--services": {"simulate"},
}
#: Flags whose default is each command's own: the help is one text up to the default in brackets at its end.
OWN_DEFAULT = {"--concurrency", "--transfers", "--db"}
#: Commands that read a shared flag more strictly than the others, keeping the values they always took.
OWN_PARSING: dict[str, set[str]] = {"--request-timeout": {"reconcile"}, "--concurrency": {"simulate"}}
#: Flags at least these commands take, as one flag: the comparison below is not empty.
SHARED = {
    "--db": {"transfer", "batch", "submit", "worker", "recover", "show", "list", "events", "reconcile", "serve"},
    "--token": {"transfer", "batch", "worker", "recover", "show", "reconcile", "serve", "retry"},
    "--json": {"transfer", "batch", "submit", "recover", "show", "list", "events", "reconcile", "cancel", "simulate"},
    "--api": {"submit", "show", "list", "events", "cancel", "retry", "resolve"},
    "--api-token": {"submit", "show", "list", "events", "cancel", "retry", "resolve"},
    "--request-timeout": {"transfer", "batch", "worker", "recover", "serve", "retry", "reconcile"},
    "--max-compensation-attempts": {"transfer", "batch", "worker", "recover", "serve", "retry"},
    "--service": {"worker", "recover", "serve", "retry", "reconcile"},
    "--concurrency": {"batch", "worker", "serve", "simulate"},
    "--lease-seconds": {"worker", "serve"},
    "--poll-seconds": {"worker", "serve"},
    "--worker-id": {"worker", "serve"},
    "--quiet": {"batch", "worker", "recover", "serve", "demo"},
    "--from": {"transfer", "submit"},
    "transaction_id": {"show", "events", "cancel", "retry", "resolve"},
}


def takers() -> dict[str, dict[str, argparse.Action]]:
    """Each flag (a positional by its name) and the commands that take it, as each one declares it."""
    taken: dict[str, dict[str, argparse.Action]] = {}
    for name, command in subcommands().items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = action.option_strings[-1] if action.option_strings else action.dest
            if name not in NAMESAKES.get(flag, set()):
                taken.setdefault(flag, {})[name] = action
    return taken


def declared(flag: str, action: argparse.Action) -> dict[str, object]:
    """What a command shows of ``flag``: the same wherever the flag is one flag."""
    shown_help = action.help or ""
    if flag in OWN_DEFAULT:
        shown_help = re.sub(r" \([^()]*\)$", "", shown_help)
    return {
        "help": shown_help,
        "default": "its own" if flag in OWN_DEFAULT else action.default,
        "kind": type(action).__name__,
        "dest": action.dest,
        "option_strings": action.option_strings,
        "metavar": action.metavar,
        "nargs": action.nargs,
        "const": action.const,
        "choices": action.choices,
        "required": action.required,
    }


def test_the_shared_flags_are_taken_by_the_commands_that_share_them() -> None:
    taken = takers()
    missing = {flag: commands - set(taken.get(flag, {})) for flag, commands in SHARED.items()}
    assert missing == dict.fromkeys(SHARED, frozenset())


@pytest.mark.parametrize("flag", sorted(flag for flag, by in takers().items() if len(by) > 1))
def test_every_command_taking_a_shared_flag_shows_one_help_and_one_default_for_it(
    flag: str, no_saga_environment: pytest.MonkeyPatch
) -> None:
    taken = takers()[flag]
    declarations = {command: declared(flag, action) for command, action in taken.items()}
    first, *others = declarations
    assert all(declarations[other] == declarations[first] for other in others), declarations
    assert declarations[first]["help"], f"{flag} has no help"
    reads = {
        command: getattr(action.type, "__qualname__", action.type)
        for command, action in taken.items()
        if command not in OWN_PARSING.get(flag, set())
    }
    assert len(set(reads.values())) == 1, reads


@pytest.mark.parametrize("flag", sorted(OWN_DEFAULT))
def test_a_flag_with_each_command_s_own_default_ends_its_help_with_that_default(flag: str) -> None:
    for command, action in takers()[flag].items():
        assert action.help is not None
        shown_default = re.search(r"\(([^()]*)\)$", action.help)
        assert shown_default is not None, (command, action.help)
        if action.default is not None:
            assert shown_default.group(1) == str(action.default), (command, action.help)


@pytest.mark.parametrize(("flag", "variable"), [("--token", "SAGA_TOKEN"), ("--api-token", "SAGA_API_TOKEN")])
def test_every_command_taking_a_token_falls_back_on_its_variable(
    flag: str, variable: str, no_saga_environment: pytest.MonkeyPatch
) -> None:
    no_saga_environment.setenv(variable, "from-the-environment")
    defaults = {command: action.default for command, action in takers()[flag].items()}
    assert defaults == dict.fromkeys(defaults, "from-the-environment")
    assert variable in (next(iter(takers()[flag].values())).help or "")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_with_a_log_takes_it_from_db_or_else_saga_db(name: str) -> None:
    command = subcommands()[name]
    option = db_option(command)
    if name in WITHOUT_LOG:
        assert option is None
        return
    assert option is not None
    assert option.default is None, "a default would hide SAGA_DB"
    assert not option.required
    assert option.help is not None
    otherwise = "a temporary file" if name in SCRATCH_LOG else "saga.db"
    assert option.help.endswith(f"(SAGA_DB; {otherwise})")
    assert option.help.startswith(DB_HELP) or name in SCRATCH_LOG


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - WITHOUT_LOG - SCRATCH_LOG))
def test_every_command_with_a_log_opens_the_one_saga_db_names(
    name: str, tmp_path: Path, no_saga_environment: pytest.MonkeyPatch
) -> None:
    """No folder at SAGA_DB's path: each command says so, naming it, before anything else happens."""
    missing = tmp_path / "no-such-folder" / "saga.db"
    no_saga_environment.setenv("SAGA_DB", str(missing))
    out, err = io.StringIO(), io.StringIO()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = main([name, *COMMANDS[name]], out, err)
    finally:
        # The worker takes stop signals over from the moment its options are read.
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert str(missing.parent) in err.getvalue()
    assert code in (1, 2)
    # --db beats SAGA_DB.
    given = tmp_path / "other-folder" / "saga.db"
    err = io.StringIO()
    try:
        main([name, *COMMANDS[name], "--db", str(given)], io.StringIO(), err)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
    assert str(given.parent) in err.getvalue()
    assert str(missing.parent) not in err.getvalue()


def test_a_scenario_reads_saga_db_too_and_takes_only_a_sqlite_file(no_saga_environment: pytest.MonkeyPatch) -> None:
    no_saga_environment.setenv("SAGA_DB", "postgresql://127.0.0.1:9/sagas")
    err = io.StringIO()
    code = main(["batch", "instances/scenarios/happy-path.json"], io.StringIO(), err)
    assert code == 2
    assert err.getvalue().splitlines()[-1] == (
        "error: a scenario keeps its sagas in a SQLite file, and --db or SAGA_DB names postgresql"
    )


def settled(argv: list[str]) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    settle_api_or_log(args)
    return args


@pytest.mark.parametrize("name", ["submit", "show", "list", "events", "cancel", "retry", "resolve"])
def test_a_flag_beats_the_environment_and_two_ways_at_once_are_refused(
    name: str, no_saga_environment: pytest.MonkeyPatch
) -> None:
    argv = [name, *COMMANDS[name]]
    api = "http://127.0.0.1:8080"
    no_saga_environment.setenv("SAGA_API", api)
    assert settled(argv).api == api
    assert settled([*argv, "--db", "x.db"]).api is None
    no_saga_environment.setenv("SAGA_DB", "y.db")
    with pytest.raises(UsageError, match=r"^SAGA_API and SAGA_DB are both set: choose with --api URL or --db LOG$"):
        settled(argv)
    assert settled([*argv, "--api", api]).api == api
    assert settled([*argv, "--db", "x.db"]).api is None
    no_saga_environment.delenv("SAGA_API")
    assert settled(argv).api is None
    with pytest.raises(UsageError, match=r"^give --api or --db, not both$"):
        settled([*argv, "--api", api, "--db", "x.db"])


def test_the_help_of_max_compensation_attempts_gives_the_worst_case_of_the_default_policies() -> None:
    transfer = subcommands()["transfer"]
    (option,) = [action for action in transfer._actions if "--max-compensation-attempts" in action.option_strings]
    assert option.help is not None
    figure = re.search(r"gives up after at most ([0-9.]+) minutes", option.help)
    assert figure is not None
    policy = policies_from(transfer.parse_args(TRANSFER)).compensation
    longest = policy.longest_step()
    assert longest is not None
    assert float(figure.group(1)) == round(longest / 60, 1)
    # The worst case: 200 requests of 5 s, and the backoffs between them at their longest.
    assert (policy.maximum_attempts, policy.request_timeout) == (200, 5.0)
    assert 24 * 60 < longest < 25 * 60
    assert f"every backoff at its longest, {policy.longest_delay_before(200):g} s" in option.help
    assert "with --deadline or --deadline-seconds the wait ends there" in option.help


# -- which sagas list shows -----------------------------------------------------------------


def test_list_takes_the_newest_of_an_account_in_a_state_and_shows_them_oldest_first() -> None:
    bank_a, bank_b = "http://a.test", "http://b.test"
    ends = [
        ("alice", "bob", SagaState.COMPLETED),
        ("bob", "carol", SagaState.COMPLETED),
        ("carol", "alice", SagaState.FAILED),
        ("alice", "carol", SagaState.COMPLETED),
        ("dave", "carol", SagaState.COMPLETED),
        ("alice", "dave", SagaState.COMPLETED),
    ]

    async def scenario() -> dict[str, list[str]]:
        log = MemorySagaLog()
        for number, (source, target, state) in enumerate(ends):
            at = 1_000 + number
            saga = SagaRecord(
                f"t{number}",
                AccountRef(bank_a, source, "bank-a"),
                AccountRef(bank_b, target, "bank-b"),
                100,
                created_at_ms=at,
                updated_at_ms=at,
            )
            await log.create(saga, state)
        completed = SagaState.COMPLETED

        async def ids(state: SagaState | None, account: tuple[str | None, str] | None, limit: int | None) -> list[str]:
            return [saga.transaction_id for saga in await listed(log, state, account, limit)]

        return {
            "all": await ids(None, None, None),
            "newest 2": await ids(None, None, 2),
            "completed, newest 2": await ids(completed, None, 2),
            "alice": await ids(None, (None, "alice"), None),
            "alice, newest 2": await ids(None, (None, "alice"), 2),
            "alice completed, newest 2": await ids(completed, (None, "alice"), 2),
            "alice failed": await ids(SagaState.FAILED, (None, "alice"), 5),
            "alice at bank-b": await ids(None, ("bank-b", "alice"), None),
            "alice at bank-z": await ids(None, ("bank-z", "alice"), None),
        }

    assert asyncio.run(scenario()) == {
        "all": ["t0", "t1", "t2", "t3", "t4", "t5"],
        "newest 2": ["t4", "t5"],
        "completed, newest 2": ["t4", "t5"],
        "alice": ["t0", "t2", "t3", "t5"],
        "alice, newest 2": ["t3", "t5"],
        "alice completed, newest 2": ["t3", "t5"],
        "alice failed": ["t2"],
        "alice at bank-b": ["t2"],
        "alice at bank-z": [],
    }


@pytest.mark.parametrize(
    ("text", "account"),
    [("alice", (None, "alice")), ("bank-a:alice", ("bank-a", "alice")), ("b.2_x:al-ice.1", ("b.2_x", "al-ice.1"))],
)
def test_an_account_is_a_user_id_or_a_service_and_a_user_id(text: str, account: tuple[str | None, str]) -> None:
    assert build_parser().parse_args(["list", "--account", text]).account == account


@pytest.mark.parametrize("text", ["", "bank-a:", ":alice", "a b", "bank a:alice", "x" * 65])
def test_an_account_that_is_neither_is_bad_input(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["list", "--account", text])
    assert exit_.value.code == 2
    assert "an account is a user_id, or SERVICE:USER_ID" in capsys.readouterr().err


# -- a reader that stops early ------------------------------------------------------------------


class ReaderGone(io.StringIO):
    """A stream whose reader has left after ``lines_read`` lines: every later write raises, as a closed pipe does."""

    def __init__(self, lines_read: int) -> None:
        super().__init__()
        self.lines_left = lines_read

    def write(self, text: str) -> int:
        if self.lines_left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.lines_left -= text.count("\n")
        return super().write(text)


def test_a_command_whose_reader_left_runs_to_its_end_and_exits_with_its_own_status(tmp_path: Path) -> None:
    log = tmp_path / "saga.db"

    async def three_sagas() -> None:
        sqlite = await SqliteSagaLog.open(log)
        for number in range(3):
            await submit(sqlite, AccountRef("http://a.test", "alice"), AccountRef("http://b.test", "bob"), number + 1)
        await sqlite.close()

    asyncio.run(three_sagas())
    out, err = ReaderGone(1), io.StringIO()
    assert main(["list", "--db", str(log)], out, err) == 0
    assert (len(out.getvalue().splitlines()), err.getvalue()) == (1, "")
    # Its errors too go nowhere once their reader left; the status stays.
    assert main(["list", "--db", str(tmp_path / "absent.db")], io.StringIO(), ReaderGone(0)) == 2
