//go:build !unix

package main

import "os"

// termWidth is 0 where the terminal's width is not looked up.
func termWidth(*os.File) int { return 0 }
