from callhistory.cli import main

main()
