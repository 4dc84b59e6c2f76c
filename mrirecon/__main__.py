"""``python -m mrirecon``: the same as the ``mrirecon`` command."""

from mrirecon.commands.main import main

if __name__ == "__main__":
    main()
