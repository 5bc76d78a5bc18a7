package kafka

import (
	"crypto/sha256"
	"crypto/sha512"
	"time"

	"github.com/IBM/sarama"
	"github.com/grete-go/grete/stream"
	"github.com/xdg-go/scram"
)

// Version is the Kafka protocol version Grete speaks. It is set explicitly
// because sarama's default is too old for idempotent production, and it is
// the version verified against the embedded broker.
var Version = sarama.V3_6_0_0

// config converts a validated stream.KafkaConfig to a sarama configuration
// with Grete's defaults: idempotent producer with acks=all, manual offset
// handling, explicit protocol version.
func config(kc stream.KafkaConfig) (*sarama.Config, error) {
	if err := kc.Validate(); err != nil {
		return nil, err
	}
	c := sarama.NewConfig()
	c.Version = Version
	c.ClientID = kc.ClientID
	if c.ClientID == "" {
		c.ClientID = "grete"
	}
	if kc.TLS != nil {
		c.Net.TLS.Enable = true
		c.Net.TLS.Config = kc.TLS
	}
	if s := kc.SASL; s != nil {
		c.Net.SASL.Enable = true
		c.Net.SASL.Handshake = true
		c.Net.SASL.User = s.User
		c.Net.SASL.Password = s.Password
		switch s.Mechanism {
		case stream.SASLPlain:
			c.Net.SASL.Mechanism = sarama.SASLTypePlaintext
		case stream.SASLScramSHA256:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA256
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha256.New} }
		case stream.SASLScramSHA512:
			c.Net.SASL.Mechanism = sarama.SASLTypeSCRAMSHA512
			c.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &scramClient{hash: sha512.New} }
		}
	}
	c.Metadata.AllowAutoTopicCreation = false

	// Producer: idempotent, acks=all, in-order per partition. Sarama needs
	// MaxOpenRequests=1 for idempotence.
	p := &c.Producer
	p.Idempotent = true
	p.RequiredAcks = sarama.WaitForAll
	c.Net.MaxOpenRequests = 1
	p.Return.Successes = true
	p.Return.Errors = true
	p.Retry.Max = 10
	p.Retry.Backoff = 100 * time.Millisecond
	p.Flush.Bytes = 1 << 20
	p.Flush.Frequency = 2 * time.Millisecond
	p.MaxMessageBytes = 1 << 20
	p.Compression = sarama.CompressionNone
	p.Partitioner = newPartitioner

	// Consumer: Grete tracks offsets itself.
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.AutoCommit.Enable = false
	c.Consumer.Fetch.Default = 1 << 20
	c.Consumer.Retry.Backoff = 250 * time.Millisecond
	c.ChannelBufferSize = 256
	return c, nil
}

// scramClient adapts github.com/xdg-go/scram to sarama's SCRAMClient.
type scramClient struct {
	hash scram.HashGeneratorFcn
	conv *scram.ClientConversation
}

func (s *scramClient) Begin(user, password, authzID string) error {
	cl, err := s.hash.NewClient(user, password, authzID)
	if err != nil {
		return err
	}
	s.conv = cl.NewConversation()
	return nil
}

func (s *scramClient) Step(challenge string) (string, error) { return s.conv.Step(challenge) }
func (s *scramClient) Done() bool                            { return s.conv.Done() }
