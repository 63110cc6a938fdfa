//! A seeded synthetic English-like text, used when no real text is installed.
//!
//! It has structure a character model can learn at several scales: a fixed list of lowercase
//! English words (spelling); a first-order Markov chain over those words whose transitions are
//! drawn once per seed, each word having a few likely successors (word order); sentences that
//! start with a capital, contain the odd comma and end in `.`, `?` or `!`, with the pronoun `I`
//! and names always capitalised; and lines wrapped before [`LINE_WIDTH`] characters, with a blank
//! line between paragraphs (layout, as in a printed novel).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::data::seeded_rng;

/// Lines are wrapped so that none is longer than this many characters (unless one word is).
const LINE_WIDTH: usize = 72;

/// Words a sentence may start with.
const STARTERS: &[&str] = &[
    "the", "she", "he", "it", "they", "i", "we", "there", "her", "his", "mr", "mrs", "miss", "a",
    "elinor", "emma", "anne", "but",
];

/// The words of the text (lowercase; [`NAMES`] and `i` are capitalised when written).
const WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "and",
    "but",
    "or",
    "of",
    "to",
    "in",
    "on",
    "at",
    "with",
    "for",
    "from",
    "by",
    "as",
    "that",
    "which",
    "who",
    "when",
    "while",
    "if",
    "not",
    "no",
    "very",
    "quite",
    "so",
    "too",
    "then",
    "now",
    "never",
    "always",
    "soon",
    "again",
    "she",
    "he",
    "it",
    "they",
    "i",
    "we",
    "you",
    "her",
    "his",
    "their",
    "my",
    "our",
    "your",
    "him",
    "them",
    "me",
    "us",
    "there",
    "was",
    "were",
    "is",
    "are",
    "had",
    "have",
    "has",
    "would",
    "could",
    "should",
    "might",
    "must",
    "will",
    "did",
    "do",
    "said",
    "thought",
    "felt",
    "knew",
    "saw",
    "heard",
    "went",
    "came",
    "made",
    "gave",
    "took",
    "found",
    "wished",
    "hoped",
    "feared",
    "believed",
    "loved",
    "liked",
    "walked",
    "spoke",
    "answered",
    "replied",
    "cried",
    "smiled",
    "mr",
    "mrs",
    "miss",
    "elinor",
    "marianne",
    "elizabeth",
    "darcy",
    "emma",
    "knightley",
    "anne",
    "wentworth",
    "fanny",
    "edmund",
    "catherine",
    "henry",
    "sister",
    "mother",
    "father",
    "friend",
    "family",
    "house",
    "room",
    "garden",
    "letter",
    "morning",
    "evening",
    "day",
    "week",
    "year",
    "time",
    "heart",
    "mind",
    "manner",
    "opinion",
    "feeling",
    "happiness",
    "fortune",
    "marriage",
    "visit",
    "ball",
    "dinner",
    "party",
    "walk",
    "conversation",
    "moment",
    "hour",
    "world",
    "society",
    "good",
    "great",
    "little",
    "young",
    "old",
    "own",
    "dear",
    "poor",
    "happy",
    "agreeable",
    "handsome",
    "pleasant",
    "proper",
    "sensible",
    "amiable",
    "kind",
    "much",
    "more",
    "most",
    "such",
    "every",
    "some",
    "any",
    "all",
    "nothing",
    "something",
    "everything",
    "one",
    "two",
    "first",
    "last",
    "long",
    "whole",
    "half",
    "indeed",
    "perhaps",
    "however",
    "certainly",
    "really",
    "only",
    "even",
    "still",
    "well",
];

/// Words always written with a capital letter.
const NAMES: &[&str] = &[
    "mr",
    "mrs",
    "miss",
    "elinor",
    "marianne",
    "elizabeth",
    "darcy",
    "emma",
    "knightley",
    "anne",
    "wentworth",
    "fanny",
    "edmund",
    "catherine",
    "henry",
];

/// Successors per word: at least this many...
const MIN_SUCCESSORS: usize = 3;
/// ...and at most this many.
const MAX_SUCCESSORS: usize = 7;
/// Words per sentence, inclusive range.
const SENTENCE_WORDS: (usize, usize) = (4, 18);
/// Probability of a comma after a word inside a sentence.
const COMMA_PROB: f64 = 0.07;
/// Probability that a paragraph ends after a sentence.
const PARAGRAPH_END_PROB: f64 = 0.18;

/// RNG domain for the transition table.
const DOMAIN_CHAIN: [u8; 8] = *b"txtchain";
/// RNG domain for walking the chain.
const DOMAIN_WALK: [u8; 8] = *b"txt-walk";

/// `chars` characters (ASCII, so also bytes) of English-like text, deterministic in `seed`: the
/// same seed gives the same text, and a shorter text is a prefix of a longer one. Never fails;
/// `chars == 0` gives an empty string.
pub fn synthetic_text(seed: u64, chars: usize) -> String {
    let chain = Chain::new(seed);
    let mut rng = seeded_rng(seed, DOMAIN_WALK, 0);
    let mut out = String::with_capacity(chars.saturating_add(2 * LINE_WIDTH));
    let mut line_len = 0;
    while out.len() < chars {
        let words = rng.gen_range(SENTENCE_WORDS.0..=SENTENCE_WORDS.1);
        let mut word = chain.start(&mut rng);
        for i in 0..words {
            let mut piece = written(WORDS[word], i == 0);
            if i + 1 == words {
                piece.push(match rng.gen_range(0..10) {
                    0 => '?',
                    1 => '!',
                    _ => '.',
                });
            } else if rng.gen_bool(COMMA_PROB) {
                piece.push(',');
            }
            if line_len == 0 {
                line_len = piece.len();
            } else if line_len + 1 + piece.len() > LINE_WIDTH {
                out.push('\n');
                line_len = piece.len();
            } else {
                out.push(' ');
                line_len += 1 + piece.len();
            }
            out.push_str(&piece);
            word = chain.next(word, &mut rng);
        }
        if rng.gen_bool(PARAGRAPH_END_PROB) {
            out.push_str("\n\n");
            line_len = 0;
        }
    }
    out.truncate(chars);
    out
}

/// `word` as written: names and `i` capitalised, and the first word of a sentence too.
fn written(word: &str, sentence_start: bool) -> String {
    let capital = sentence_start || word == "i" || NAMES.contains(&word);
    let mut out = String::with_capacity(word.len() + 1);
    let mut letters = word.chars();
    if let Some(first) = letters.next() {
        out.push(if capital {
            first.to_ascii_uppercase()
        } else {
            first
        });
    }
    out.extend(letters);
    out
}

/// The per-seed transition table over [`WORDS`].
struct Chain {
    /// Indices into [`WORDS`] of the sentence starters.
    starters: Vec<usize>,
    /// Per word: (successor index, cumulative weight), the last weight being the total.
    successors: Vec<Vec<(usize, f64)>>,
}

impl Chain {
    fn new(seed: u64) -> Self {
        let mut rng = seeded_rng(seed, DOMAIN_CHAIN, 0);
        let starters = STARTERS
            .iter()
            .filter_map(|s| WORDS.iter().position(|w| w == s))
            .collect();
        let successors = (0..WORDS.len())
            .map(|_| {
                let n = rng.gen_range(MIN_SUCCESSORS..=MAX_SUCCESSORS);
                let mut total = 0.0;
                (0..n)
                    .map(|_| {
                        // Skewed weights: one or two successors dominate.
                        let w: f64 = rng.gen_range(0.05f64..1.0).powi(3);
                        total += w;
                        (rng.gen_range(0..WORDS.len()), total)
                    })
                    .collect()
            })
            .collect();
        Chain {
            starters,
            successors,
        }
    }

    fn start(&self, rng: &mut ChaCha8Rng) -> usize {
        self.starters[rng.gen_range(0..self.starters.len())]
    }

    fn next(&self, word: usize, rng: &mut ChaCha8Rng) -> usize {
        let options = &self.successors[word];
        let total = options.last().map_or(0.0, |&(_, t)| t);
        let x = rng.gen_range(0.0..total.max(f64::MIN_POSITIVE));
        options
            .iter()
            .find(|&&(_, t)| x < t)
            .or(options.last())
            .map_or(0, |&(w, _)| w)
    }
}
