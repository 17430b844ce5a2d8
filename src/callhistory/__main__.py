from callhistory.cli import main

if __name__ == "__main__":  # not when a process this one spawns imports it
    main()
