from reconciler.cli.main import main


def test_help_exits_zero(capsys: object) -> None:
    assert main(["--help"]) == 0
