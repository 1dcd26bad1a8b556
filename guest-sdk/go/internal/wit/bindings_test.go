// Package wit holds the bindings scripts/go-bindings.sh generates from
// wit/sluice.wit; this test fails when the contract changed without them.
package wit

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

func TestTheBindingsAreGeneratedFromTheCurrentContract(t *testing.T) {
	contract, err := os.ReadFile("../../../../wit/sluice.wit")
	if err != nil {
		t.Fatal(err)
	}
	recorded, err := os.ReadFile("WIT_SHA256")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(contract)
	if got, want := hex.EncodeToString(sum[:]), strings.TrimSpace(string(recorded)); got != want {
		t.Fatalf("wit/sluice.wit changed since the Go bindings were generated (sha256 %s, bindings from %s): run scripts/go-bindings.sh", got, want)
	}
}
