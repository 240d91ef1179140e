"""``python -m uwsgigw`` is the ``uwsgigw`` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="uwsgigw")
