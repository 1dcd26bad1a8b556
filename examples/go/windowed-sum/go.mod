module example.com/windowedsum

go 1.25

require github.com/sluice-streaming/sluice/guest-sdk/go v0.0.0

require go.bytecodealliance.org/pkg v0.2.3 // indirect

replace (
	github.com/sluice-streaming/sluice/guest-sdk/go => ../../../guest-sdk/go
	go.bytecodealliance.org/pkg => ../../../guest-sdk/go/third_party/go-pkg
)
