use super::*;

const LIMITS: SessionLimits = SessionLimits {
    recipients_max: 2,
    message_bytes_max: 100,
    errors_max: 3,
};

/// `*@shop.m` and the alias `sales@shop.example.org` go to `shop`,
/// `*@blog.m` to `blog`; nothing else exists.
fn resolve(address: &str) -> Resolution {
    if address == "sales@shop.example.org" {
        return Resolution::App {
            app: "shop".into(),
            local: address.into(),
        };
    }
    match address.split_once('@') {
        Some((local, "shop.m")) => Resolution::App {
            app: "shop".into(),
            local: local.into(),
        },
        Some((local, "blog.m")) => Resolution::App {
            app: "blog".into(),
            local: local.into(),
        },
        _ => Resolution::Unknown,
    }
}

fn session(tls_available: bool) -> Session {
    Session::new("node1.m", LIMITS, tls_available)
}

/// Sends `line`, returning the reply code and what comes next.
fn send(session: &mut Session, line: &str) -> (u16, Next) {
    let (reply, next) = session.command(line.as_bytes(), &mut resolve);
    (reply.code, next)
}

#[test]
fn a_whole_transaction_reaches_data_with_its_envelope() {
    let mut s = session(false);
    assert_eq!(s.greeting().code, 220);
    let (reply, next) = s.command(b"EHLO client.org", &mut resolve);
    assert_eq!((reply.code, next), (250, Next::Command));
    assert!(reply.lines.contains(&"SIZE 100".to_string()), "{reply:?}");
    assert!(!reply.lines.contains(&"STARTTLS".to_string()));
    assert_eq!(
        String::from_utf8(reply.to_wire()).expect("text"),
        "250-node1.m greets client.org\r\n250-SIZE 100\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
    );
    assert_eq!(send(&mut s, "NOOP"), (250, Next::Command));
    assert_eq!(
        send(&mut s, "mail from:<Bob@X.org> SIZE=50"),
        (250, Next::Command)
    );
    assert_eq!(
        send(&mut s, "RCPT TO:<Orders@Shop.M>"),
        (250, Next::Command)
    );
    assert_eq!(
        send(&mut s, "RCPT TO: <sales@shop.example.org>"),
        (250, Next::Command)
    );
    assert_eq!(send(&mut s, "DATA"), (354, Next::Data));
    let envelope = s.envelope().expect("envelope").clone();
    assert_eq!(envelope.from, "Bob@X.org");
    assert_eq!(envelope.app, "shop");
    let locals: Vec<&str> = envelope
        .recipients
        .iter()
        .map(|r| r.local.as_str())
        .collect();
    assert_eq!(locals, vec!["orders", "sales@shop.example.org"]);
    assert_eq!(s.message_end(Delivery::Committed).0.code, 250);
    // The transaction is over: a new one starts with MAIL again.
    assert_eq!(send(&mut s, "RCPT TO:<a@shop.m>").0, 503);
    assert_eq!(send(&mut s, "MAIL FROM:<>"), (250, Next::Command));
    assert_eq!(send(&mut s, "QUIT"), (221, Next::Close));
}

#[test]
fn commands_out_of_sequence_are_refused() {
    let mut s = session(false);
    assert_eq!(send(&mut s, "MAIL FROM:<a@b>").0, 503, "before EHLO");
    assert_eq!(send(&mut s, "HELO client").0, 250);
    assert_eq!(send(&mut s, "RCPT TO:<a@shop.m>").0, 503, "before MAIL");
    assert_eq!(send(&mut s, "DATA").0, 503, "before MAIL");
    let mut s = session(false);
    send(&mut s, "HELO client");
    send(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(send(&mut s, "MAIL FROM:<a@b>").0, 503, "twice");
    assert_eq!(send(&mut s, "DATA").0, 554, "no recipient");
    assert_eq!(send(&mut s, "RSET").0, 250);
    assert_eq!(send(&mut s, "RCPT TO:<a@shop.m>").0, 503, "RSET ended it");
}

#[test]
fn bad_syntax_and_unknown_commands_get_5xx_then_the_session_closes() {
    let mut s = session(false);
    assert_eq!(send(&mut s, "EHLO").0, 501);
    assert_eq!(send(&mut s, "BDAT 10").0, 500);
    assert_eq!(s.command(&[0xff, 0xfe], &mut resolve).0.code, 500);
    // The fourth error is past errors_max = 3.
    assert_eq!(
        s.line_too_long(),
        (
            Reply::new(421, "4.7.0 too many errors; closing"),
            Next::Close
        )
    );
    assert_eq!(session(false).line_too_long().0.code, 500);
    let mut s = session(false);
    send(&mut s, "HELO c");
    assert_eq!(send(&mut s, "MAIL FROM:a@b").0, 501, "no angle brackets");
    assert_eq!(send(&mut s, "MAIL FROM:<a@b> SIZE=x").0, 501);
    assert_eq!(send(&mut s, "VRFY a").0, 252);
}

#[test]
fn recipients_unknown_other_app_and_past_the_bound() {
    let mut s = session(false);
    send(&mut s, "EHLO c");
    send(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(send(&mut s, "RCPT TO:<a@nowhere.m>").0, 550);
    assert_eq!(send(&mut s, "RCPT TO:<>").0, 501);
    assert_eq!(send(&mut s, "RCPT TO:<a@shop.m>").0, 250);
    assert_eq!(send(&mut s, "RCPT TO:<a@blog.m>").0, 452, "second app");
    assert_eq!(send(&mut s, "RCPT TO:<b@shop.m>").0, 250);
    assert_eq!(send(&mut s, "RCPT TO:<c@shop.m>").0, 452, "recipients_max");
    assert_eq!(send(&mut s, "DATA").0, 354);
    assert_eq!(s.envelope().expect("envelope").recipients.len(), 2);
}

#[test]
fn a_recipient_that_cannot_be_checked_gets_450_and_can_be_sent_again() {
    let mut s = session(false);
    send(&mut s, "EHLO c");
    send(&mut s, "MAIL FROM:<a@b>");
    let (reply, next) = s.command(b"RCPT TO:<a@shop.m>", &mut |_| Resolution::Unavailable);
    assert_eq!((reply.code, next), (450, Next::Command));
    assert_eq!(send(&mut s, "DATA").0, 554, "no recipient was accepted");
    // The session is unchanged by the refusal: the same RCPT runs again.
    send(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(send(&mut s, "RCPT TO:<a@shop.m>").0, 250);
    assert_eq!(send(&mut s, "DATA").0, 354);
}

#[test]
fn oversize_is_refused_at_mail_from_and_at_the_end_of_data() {
    let mut s = session(false);
    send(&mut s, "EHLO c");
    assert_eq!(send(&mut s, "MAIL FROM:<a@b> SIZE=101").0, 552);
    let mut buffer = MessageBuffer::new(10);
    assert_eq!(buffer.push_line(b"0123456789\r\n"), DataLine::More);
    assert_eq!(buffer.push_line(b".\r\n"), DataLine::End);
    assert_eq!(buffer.finish(), None, "12 bytes are over 10");
    for delivery in [
        (Delivery::TooLarge, 552),
        (Delivery::NotCommitted, 451),
        (Delivery::NoTrigger, 550),
        (Delivery::Malformed, 554),
    ] {
        assert_eq!(s.message_end(delivery.0).0.code, delivery.1);
    }
}

#[test]
fn data_lines_are_dot_unstuffed_and_end_at_a_lone_dot() {
    let mut buffer = MessageBuffer::new(100);
    for line in [
        &b"Subject: x\r\n"[..],
        b"\r\n",
        b"..leading dot\r\n",
        b"body\r\n",
    ] {
        assert_eq!(buffer.push_line(line), DataLine::More);
    }
    assert_eq!(buffer.push_line(b".\r\n"), DataLine::End);
    assert_eq!(
        buffer.finish().expect("fits"),
        b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n".to_vec()
    );
    let mut skipped = MessageBuffer::new(5);
    skipped.skipped(6);
    assert_eq!(skipped.finish(), None);
}

#[test]
fn starttls_is_offered_only_with_a_certificate_and_resets_the_session() {
    let mut plain = session(false);
    send(&mut plain, "EHLO c");
    assert_eq!(send(&mut plain, "STARTTLS").0, 502);

    let mut s = session(true);
    let (reply, _) = s.command(b"EHLO c", &mut resolve);
    assert!(reply.lines.contains(&"STARTTLS".to_string()));
    send(&mut s, "MAIL FROM:<a@b>");
    assert_eq!(send(&mut s, "STARTTLS"), (220, Next::StartTls));
    // Everything before the handshake is forgotten: EHLO again first.
    assert_eq!(send(&mut s, "MAIL FROM:<a@b>").0, 503);
    let (reply, _) = s.command(b"EHLO c", &mut resolve);
    assert!(!reply.lines.contains(&"STARTTLS".to_string()), "not twice");
    assert_eq!(send(&mut s, "STARTTLS").0, 503);
    assert_eq!(send(&mut s, "MAIL FROM:<a@b>").0, 250);
}
