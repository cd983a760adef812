"""Channel adapters: each turns its channel's wire format into InboundMessage
and delivers OutboundMessage; none knows anything about routing."""
