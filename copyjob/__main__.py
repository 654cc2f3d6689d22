from copyjob.cli import main

main()
