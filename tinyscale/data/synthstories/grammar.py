"""The SynthStories grammar: sentence patterns for each stage of a story's plot.

A pattern is text with slots. Roles are story entities:
  A  the hero, B  a friend (a second child), F  a family member, O  the main object,
  Q  a second object (often an animal), P  the place.
Slots:
  {A}        subject: the name, or he/she when A is the focus (see generate.py)
  {A.name}   always the name          {A.new}   the name, introduced here
  {A.him}    object: name or him/her  {A.his}   possessive: name's or his/her
  {A.a_kind} "a little girl" (article + optional adjective + gendered noun)
  {O.a}      "a shiny ball" (introduces O)   {O}   the bare noun ("the {O}")
  {P}        the place noun           {@cat}    any word of a lexicon category
  <say> <ask>  an utterance (inside quotes), from the lists at the bottom
Each pattern is also what the validator parses with: the grammar is exactly the set
of sentences these patterns produce.
"""

from __future__ import annotations

# Problem kinds pair a problem with its resolutions, so a consistent story resolves
# the problem it raised.
SETTING = [
    "Once upon a time, there was {A.a_kind} named {A.new}.",
    "Once upon a time, in a {@adj} village, there lived {A.a_kind} named {A.new}.",
    "There was once {A.a_kind} named {A.new}.",
    "One {@weather} {@time}, {A.a_kind} named {A.new} woke up {@feel}.",
    "{A.new} was {A.a_kind} who loved to {@act}.",
    "Once there was {A.a_kind} called {A.new}.",
    "In a little house by the {P}, there lived {A.a_kind} named {A.new}.",
    "Long ago, {A.a_kind} named {A.new} lived near the {P}.",
    "It was a {@weather} {@season} day, and {A.a_kind} named {A.new} wanted to {@act}.",
]
SETTING_MORE = [
    "{A} lived with {A.his} mom and dad.",
    "{A} liked to {@act} every day.",
    "{A} was very {@feel} and liked to {@act}.",
    "Every {@time}, {A} would {@act} with {A.his} friends.",
    "{A.name}'s favorite color was {@color}.",
    "{A} had a friend named {B.new}.",
    "{A.name} had a best friend named {B.new}.",
    "{A.name} and {A.his} friend {B.new} liked to {@act} together.",
    "{A} was {@number} years old.",
]
EVENT = [
    "One day, {A} found {O.a} in the {P}.",
    "One day, {A.name} went to the {P} with {F.name}.",
    "One {@weather} {@time}, {A} went to the {P}.",
    "{A} had {O.a}.",
    "{A.name} got {O.a} from {F.name}.",
    "{F.name} gave {A.him} {O.a}.",
    "In the {P}, {A} saw {O.a}.",
    "{A} saw {O.a} near the {P}.",
    "{A} loved {A.his} {@adj} {O} very much.",
    "{A} {@hand_past} the {O} {@adv}.",
    "{A} {@act_past} around the {P} with the {O}.",
    "{A} wanted to show the {O} to {B.name}.",
    "{A} and {B.name} went to the {P} to {@act}.",
    "{A} and {B.name} {@act_past} in the {P} all {@time}.",
    "The {O} was {@adj} and {@adj}.",
    "{A} thought the {O} was very {@adj}.",
    "{A} {@act_past} and {@act_past} with the {O}.",
    "Then {A} saw {Q.a} by the {P}.",
    "{A} smiled at the {Q}.",
    "The sun was {@adj} and the sky was {@color}.",
]
PROBLEMS = {
    "lost": (
        ["One day, {A} could not find {A.his} {O}.",
         "{A} looked for the {O} in the {P}, but it was gone.",
         "{A.name}'s {O} was lost, and {A} felt {@feel}."],
        ["{A} looked under the {@object} and found the {O}.",
         "{B.name} helped {A.him} look, and they found the {O} in the {P}.",
         "At last, {A} found the {O} behind a big tree.",
         "The {Q} found the {O} and brought it back to {A.name}."]),
    "broken": (
        ["Then the {O} fell and broke.",
         "Oh no, the {O} broke into {@number} pieces!",
         "{A} dropped the {O}, and it broke."],
        ["{F.name} helped {A.him} fix the {O}.",
         "{A} and {B.name} fixed the {O} with some glue.",
         "{F.name} fixed the {O}, and it was as good as new."]),
    "stuck": (
        ["The wind blew the {O} up into a tall tree.",
         "The {O} got stuck in the {@adj} mud.",
         "The {O} rolled into the {P} and got stuck."],
        ["{F.name} used a long stick to get the {O} down.",
         "{A} climbed up {@adv} and got the {O}.",
         "{B.name} pulled hard, and the {O} came free."]),
    "share": (
        ["{B.name} wanted to play with the {O} too.",
         "{A} did not want to share the {O} with {B.name}.",
         "{B.name} took the {O}, and {A} was {@feel}."],
        ["{A} decided to share the {O} with {B.name}.",
         "{A} and {B.name} took turns with the {O}.",
         "{F.name} told them that sharing is kind, so they shared the {O}."]),
    "scared": (
        ["Then there was a loud {@sound}, and the {Q} was scared.",
         "The {Q} ran away from {A.name}.",
         "A big storm came, and {A} was scared."],
        ["{A} {@adv} patted the {Q}, and it was calm again.",
         "{F.name} gave {A.him} a big hug, and {A} felt safe.",
         "{A} sang a song, and the {Q} was not scared anymore."]),
}
DIALOGUE = [
    '{A} said, "<say>."',
    '{A} said, "<say>!"',
    '{A} asked, "<ask>?"',
    '"<say>," said {A.name}.',
    '"<say>," {A} said.',
    '{F.name} said, "<say>."',
    '{F.name} asked, "<ask>?"',
    '"<say>," said {F.name}.',
    '{B.name} said, "<say>!"',
    '{B.name} asked, "<ask>?"',
    '"<say>," said {B.name}.',
    '{A} shouted, "<say>!"',
    '{A} whispered, "<say>."',
    '{A} smiled and said, "<say>."',
]
SAY = [
    "I love my {O}",
    "I want to {@act}",
    "Let's {@act} together",
    "Let's go to the {P}",
    "I am so {@feel}",
    "Thank you for the {O}",
    "Look at the {@adj} {O}",
    "We can fix it",
    "I will help you",
    "I am sorry",
    "The {O} is so {@adj}",
    "I can not find my {O}",
    "You are my best friend",
    "It is okay",
    "Do not be {@feel}",
    "I like your {O}",
    "This is fun",
    "We did it",
]
ASK = [
    "Can I play with the {O}",
    "Where is my {O}",
    "Do you want to {@act}",
    "What is that",
    "Can you help me",
    "Will you share the {O}",
    "Are you {@feel}",
    "Can we go to the {P}",
    "Who has the {O}",
]
ENDING = [
    "From that day on, {A} and {B.name} were best friends.",
    "{A} learned that it is good to share.",
    "{A} was very {@feel} and played with the {O} all day.",
    "{A} hugged {F.name} and said thank you.",
    "That night, {A} went to sleep with the {O} in {A.his} arms.",
    "{A} and {B.name} laughed and played until the sun went down.",
    "{A} never lost the {O} again.",
    "{A} took good care of the {O} from then on.",
    "Everyone was {@feel}, and they all went home.",
    "And {A} lived happily ever after.",
    "{A} smiled, and the {Q} smiled too.",
    "It was the best day ever.",
    "{A} went home and told {F.name} all about the {P}.",
]
FEELING = [
    "{A} felt {@feel}.",
    "{A} was {@feel} and {@feel}.",
    "{A} started to cry.",
    "{A} did not know what to do.",
    "{A} felt much better.",
    "{A} jumped up and down.",
    "{A} gave {B.name} a big hug.",
]

# The story features of SynthStories-Instruct (instruct.py), as TinyStories-Instruct
# names them; the base corpus never uses these patterns, so it is unchanged by them.
FORESHADOWING = [
    "{A} did not know that this day would be special.",
    "Something big was going to happen that day.",
    "{A} had a feeling that something was about to happen.",
    "Little did {A.name} know that the {O} would bring trouble.",
]
TWIST = [
    "But then, something surprising happened.",
    "To {A.name}'s surprise, the {O} could talk!",
    "It turned out that the {O} was magic!",
    "Suddenly, the {Q} started to sing!",
]
MORAL = [
    "{A} learned that it is good to share.",
    "{A} learned that it is good to be kind.",
    "{A} learned to be careful with {A.his} things.",
    "{A} learned that friends help each other.",
    "The moral of the story is to always be kind.",
]
SAD = ["{A} was sad for a long time.", "It was a sad day for {A.name}."]
BAD_ENDINGS = {  # a problem left unsolved
    "lost": ["{A} never found the {O} again.",
             "The {O} was gone forever, and {A} was very sad."] + SAD,
    "broken": ["The {O} could not be fixed, and {A} cried.",
               "The {O} stayed broken forever."] + SAD,
    "stuck": ["The {O} stayed stuck, and {A} went home sad.",
              "Nobody could get the {O} back."] + SAD,
    "share": ["{A} and {B.name} did not play together again.",
              "{B.name} went home, and {A} was alone."] + SAD,
    "scared": ["The {Q} ran away and never came back.", "{A} stayed scared all night."] + SAD,
}

# Patterns usable as whole sentences (the validator's start symbol).
SENTENCE_PATTERNS = list(dict.fromkeys(
    SETTING + SETTING_MORE + EVENT + DIALOGUE + ENDING + FEELING
    + [p for problem, fixes in PROBLEMS.values() for p in problem + fixes]
    + FORESHADOWING + TWIST + MORAL + [p for ps in BAD_ENDINGS.values() for p in ps]))
SUB_PATTERNS = {"say": SAY, "ask": ASK}
