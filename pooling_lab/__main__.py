from pooling_lab.cli import main

main()
