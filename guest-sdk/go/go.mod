module github.com/sluice-streaming/sluice/guest-sdk/go

go 1.25

require go.bytecodealliance.org/pkg v0.2.3

// The bindings' runtime package, vendored (scripts/go-bindings.sh): no Go
// module proxy is needed to build a Sluice operator.
replace go.bytecodealliance.org/pkg => ./third_party/go-pkg
