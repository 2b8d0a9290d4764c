//! Just enough Markdown to tell which lines of a note GitLab renders as plain text.
//!
//! Not a Markdown parser: it tracks fenced and indented code, `>` quotes, GitLab's
//! `>>>` quote blocks, and code spans (which may run over lines within a
//! paragraph), so that `/deploy` inside any of them is never taken as a command.

/// The lines of `note` that start as plain text, trimmed of up to 3 leading spaces, in order.
pub(super) fn command_lines(note: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut quote_block = false;
    let mut paragraph: Vec<&str> = Vec::new();
    for raw in note.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let (indent, body) = indentation(line);
        if let Some((ch, len)) = fence {
            if indent < 4 && closes_fence(body, ch, len) {
                fence = None;
            }
            continue;
        }
        if quote_block {
            if body.trim_end() == ">>>" {
                quote_block = false;
            }
            continue;
        }
        let is_blank = body.trim().is_empty();
        // An indented line continues a paragraph; on its own it is a code block.
        if is_blank || (indent >= 4 && paragraph.is_empty()) {
            flush(&mut paragraph, &mut out);
            continue;
        }
        if indent < 4 {
            if body.trim_end() == ">>>" {
                flush(&mut paragraph, &mut out);
                quote_block = true;
                continue;
            }
            if body.starts_with('>') {
                flush(&mut paragraph, &mut out);
                continue;
            }
            if let Some(open) = opens_fence(body) {
                flush(&mut paragraph, &mut out);
                fence = Some(open);
                continue;
            }
        }
        paragraph.push(if indent < 4 { body } else { line.trim_start() });
    }
    flush(&mut paragraph, &mut out);
    out.into_iter()
}

/// Leading spaces (a tab counts as 4) and the rest of the line after at most 3 of them.
fn indentation(line: &str) -> (usize, &str) {
    let mut width = 0;
    for (i, c) in line.char_indices() {
        match c {
            ' ' => width += 1,
            '\t' => width += 4,
            _ => return (width, if width < 4 { &line[i..] } else { line }),
        }
        if width >= 4 {
            return (width, line);
        }
    }
    (width, "")
}

fn opens_fence(body: &str) -> Option<(char, usize)> {
    let ch = body.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = body.chars().take_while(|c| *c == ch).count();
    if len < 3 {
        return None;
    }
    // A backtick fence's info string may not contain backticks (that is inline code).
    if ch == '`' && body[len..].contains('`') {
        return None;
    }
    Some((ch, len))
}

fn closes_fence(body: &str, ch: char, len: usize) -> bool {
    let run = body.chars().take_while(|c| *c == ch).count();
    run >= len && body[run * ch.len_utf8()..].trim().is_empty()
}

/// Adds the paragraph's lines whose start is not inside a code span.
fn flush<'a>(paragraph: &mut Vec<&'a str>, out: &mut Vec<&'a str>) {
    if paragraph.is_empty() {
        return;
    }
    // Code spans are matched over the paragraph as a whole (CommonMark: a run of
    // n backticks opens a span only if a run of exactly n closes it later).
    let mut starts = Vec::with_capacity(paragraph.len());
    let mut text = String::new();
    for line in paragraph.iter() {
        starts.push(text.len());
        text.push_str(line);
        text.push('\n');
    }
    let spans = code_spans(&text);
    for (line, start) in paragraph.iter().zip(starts) {
        if !spans.iter().any(|&(a, b)| a < start && start < b) {
            out.push(line);
        }
    }
    paragraph.clear();
}

/// Byte ranges `(open, close_end)` of the code spans in `text`.
fn code_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let runs = {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'`' {
                let start = i;
                while i < bytes.len() && bytes[i] == b'`' {
                    i += 1;
                }
                let escaped = start > 0 && bytes[start - 1] == b'\\';
                runs.push((start, i - start, escaped));
            } else {
                i += 1;
            }
        }
        runs
    };
    let mut spans = Vec::new();
    let mut k = 0;
    while k < runs.len() {
        let (start, len, escaped) = runs[k];
        if escaped {
            k += 1;
            continue;
        }
        match runs[k + 1..].iter().position(|&(_, l, _)| l == len) {
            Some(offset) => {
                let (close, close_len, _) = runs[k + 1 + offset];
                spans.push((start, close + close_len));
                k += offset + 2;
            }
            None => k += 1,
        }
    }
    spans
}
