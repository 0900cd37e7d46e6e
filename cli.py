"""Run the pooling-lab command line from a checkout: ``python cli.py run experiments/quickstart.yaml``."""

from pooling_lab.cli import main

if __name__ == "__main__":
    main()
