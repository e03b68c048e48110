package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// cmdVersion is distlock version: it prints the main module's version
// ("(devel)" for a build from a source tree), its VCS revision when known,
// and the Go version and platform it was built with.
func cmdVersion(args []string) int {
	if len(args) > 0 {
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			fmt.Print("Usage: distlock version\n\nPrints the version of distlock and of the Go toolchain that built it.\n\nExample:\n  distlock version\n")
			return exitOK
		}
		errorf("version: unexpected argument %q", args[0])
		return exitUsage
	}
	version, revision := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v := bi.Main.Version; v != "" {
			version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				if s.Value == "true" && revision != "" {
					revision += "+dirty"
				}
			}
		}
	}
	fmt.Printf("distlock %s", version)
	if revision != "" {
		fmt.Printf(" (%s)", revision)
	}
	fmt.Printf(" %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
