"""The SynthStories lexicon: child-level word lists, one category per list.

Lists are ordered roughly from most to least common, so that the `richness` knob
(a fraction of each list, see `lexicon(richness)`) keeps the everyday words first.
Every word belongs to the categories it is listed in and nothing else; the grammar
(`grammar.py`) refers to these categories by name.
"""

from __future__ import annotations

import functools

GIRL_NAMES = """Lily Mia Sue Lucy Amy Anna Emma Sara Zoe Ella Ruby Rose Daisy Molly
Kate Jane Ivy Lila Nora Ava Chloe Grace Hannah Julia Kim Lena Maya Nina Olive Pam
Rita Sophie Tina Una Vera Wendy Alice Bella Clara Dora Eva Fay Gina Hazel Iris
Jenny Kara Luna Mae Nell Polly Rosie Sally Tess Violet Willa Abby Beth Cora""".split()

BOY_NAMES = """Tom Ben Sam Max Jack Tim Leo Finn Joe Bob Dan Eli Ed Fred Gus Hank
Ian Jake Kyle Luke Matt Ned Owen Pete Ray Rex Sid Ted Vic Walt Zack Adam Billy
Carl Dave Evan Frank Greg Harry Ivan Jim Kevin Liam Mark Noah Oscar Paul Ryan Seth
Theo Toby Victor Wes Alex Bruno Colin Dean Felix Henry Jonah""".split()

# Family members are characters that need no introduction: "Mom said, ...".
FAMILY = {"Mom": "f", "Dad": "m", "Grandma": "f", "Grandpa": "m"}

# Gendered nouns for introductions ("a little girl named Lily").
KINDS = {"girl": "f", "boy": "m", "princess": "f", "prince": "m", "sister": "f",
         "brother": "m", "lady": "f", "man": "m", "queen": "f", "king": "m"}

TOYS = """ball doll kite car train boat truck drum book block teddy puzzle robot
top yoyo whistle balloon plane bike wagon shovel bucket crayon marker sticker
bell flute piano guitar horn rattle puppet mask crown hat scarf sock shoe boot
mitten glove coat dress shirt cape ribbon bow necklace ring bracelet button
box basket bag jar cup bowl plate spoon fork pan pot lamp clock key map stone
shell feather leaf stick flower rock pebble coin star gem jewel cookie cake pie
apple banana pear plum peach orange grape cherry lemon melon carrot potato tomato
sandwich muffin cupcake donut pizza pancake waffle candy lollipop sweet snack
cheese egg bread bun cracker pretzel berry nut seed blanket pillow quilt rug
chair stool bench table bed swing slide rope net ladder hammer brush comb
mirror picture painting letter card gift present ticket medal trophy badge flag
sign stamp envelope notebook pencil pen eraser ruler paper magnet
umbrella wand broom bottle cap helmet sled wheel tire pail kazoo harmonica
trumpet tambourine xylophone rocket spaceship dinosaur dragon
marble dice domino kazoo pinwheel snowglobe lantern candle flashlight compass
telescope binoculars backpack purse wallet bead button acorn pinecone seashell
crystal ornament cushion hammock mug kettle teapot basket napkin towel soap
sponge toothbrush bandage sticker kite""".split()
# Animals are objects too: introduced with "a", then "the dog" and "it".
ANIMALS = """dog cat bird fish frog duck rabbit bunny mouse puppy kitten pony horse
cow pig sheep goat hen chick owl bee butterfly ladybug snail turtle squirrel fox
bear deer lamb goose swan parrot hamster lizard worm ant spider crab seal whale
dolphin penguin monkey lion tiger zebra giraffe elephant hippo kangaroo koala
panda raccoon beaver otter bat moth""".split()
OBJECTS = list(dict.fromkeys(TOYS + ANIMALS))

ADJECTIVES = """big small little red blue green yellow pink purple orange white black
brown shiny soft old new pretty tiny huge round long short tall fluffy fuzzy
bright dark happy funny silly shy brave kind gentle sweet warm cold wet dry clean
dirty heavy light smooth rough sparkly golden silver striped spotted strong fast
slow quiet loud noisy lovely special magic wooden plastic paper glass sticky
bumpy squishy tasty yummy fancy plain cute cozy lucky lonely sleepy busy curious
careful clever friendly helpful playful proud calm wild wise young tidy messy
bouncy crunchy juicy spicy sour salty crispy chubby skinny giant mini broken
hungry thirsty grumpy jolly merry neat odd precious rare real rusty shaggy sharp
shallow deep empty full fresh frozen furry gray hairy hollow icy lazy muddy
plump quick rainy snowy sunny windy stormy dusty foggy glittery dotted
wobbly sleek tangled twisty crooked lumpy silky velvet woolly leafy
grassy sandy rocky pebbly creaky squeaky rattly jingly twinkly glowing
gleaming dull faded bold cheerful dreamy gloomy sneaky fearless gigantic
teeny enormous marvelous wonderful terrible awful delightful mysterious
magical colorful""".split()

PLACES = """park garden forest beach lake river pond farm zoo school house kitchen
yard field hill meadow playground store market library castle cave barn village
town city street road bridge mountain valley jungle island ocean sea shore woods
camp tent pool bakery shop museum station circus fair orchard nest tree attic
basement bedroom bathroom porch backyard sandbox classroom hallway greenhouse
lighthouse harbor dock canyon desert swamp marsh creek waterfall volcano
igloo treehouse cottage palace tower garage""".split()

FEELINGS = """happy sad glad angry scared tired excited surprised proud worried
upset lonely calm brave silly grumpy sleepy hungry thankful shy nervous jolly
cheerful bored curious confused""".split()

# (base form, past tense) of activities a character can do alone.
ACTIVITIES = [tuple(p.split(":")) for p in """play:played run:ran jump:jumped
dance:danced sing:sang swim:swam read:read draw:drew paint:painted skip:skipped
hop:hopped climb:climbed laugh:laughed walk:walked bake:baked cook:cooked
spin:spun clap:clapped hum:hummed giggle:giggled explore:explored rest:rested
nap:napped whistle:whistled build:built write:wrote count:counted wiggle:wiggled
swing:swung slide:slid roll:rolled race:raced march:marched dig:dug sail:sailed
fly:flew skate:skated knit:knitted crawl:crawled stretch:stretched bounce:bounced
splash:splashed tiptoe:tiptoed wander:wandered""".split()]

# (base, past) of things a character does to an object.
HANDLINGS = [tuple(p.split(":")) for p in """hold:held hug:hugged carry:carried
wash:washed pat:patted share:shared take:took keep:kept find:found see:saw
touch:touched show:showed clean:cleaned fix:fixed hide:hid paint:painted
love:loved like:liked need:needed want:wanted check:checked grab:grabbed
lift:lifted push:pushed pull:pulled drop:dropped toss:tossed throw:threw
catch:caught kick:kicked watch:watched follow:followed chase:chased feed:fed
brush:brushed wrap:wrapped open:opened shake:shook squeeze:squeezed
polish:polished count:counted""".split()]

WEATHER = """sunny rainy windy snowy cloudy foggy warm cold hot cool bright
stormy""".split()
TIMES = """morning afternoon evening night day""".split()
SEASONS = """spring summer fall winter""".split()
ADVERBS = """slowly quickly happily sadly quietly loudly carefully gently softly
proudly bravely kindly calmly eagerly sleepily shyly""".split()
SOUNDS = """boom bang pop crash splash buzz ding thud whoosh squeak""".split()
NUMBERS = """two three four five six seven eight nine ten""".split()
COLORS = """red blue green yellow pink purple orange white black brown gold
silver""".split()


def _cut(words: list, richness: float) -> list:
    """The first `richness` share of a list (at least 4 words)."""
    return list(words[: max(4, round(len(words) * richness))])


@functools.lru_cache(maxsize=8)
def lexicon(richness: float = 1.0) -> dict[str, tuple]:
    """Word lists by category, cut to a share of the full lexicon."""
    if not 0.0 < richness <= 1.0:
        raise ValueError(f"richness must be in (0, 1], got {richness}")
    acts = _cut(ACTIVITIES, richness)
    hands = _cut(HANDLINGS, richness)
    return {
        "girl": tuple(_cut(GIRL_NAMES, richness)),
        "boy": tuple(_cut(BOY_NAMES, richness)),
        "toy": tuple(_cut(TOYS, richness)),
        "animal": tuple(_cut(ANIMALS, richness)),
        "object": tuple(dict.fromkeys(_cut(TOYS, richness) + _cut(ANIMALS, richness))),
        "adj": tuple(_cut(ADJECTIVES, richness)),
        "place": tuple(_cut(PLACES, richness)),
        "feel": tuple(FEELINGS),
        "act": tuple(a for a, _ in acts),
        "act_past": tuple(dict.fromkeys(p for _, p in acts)),
        "hand": tuple(h for h, _ in hands),
        "hand_past": tuple(dict.fromkeys(p for _, p in hands)),
        "weather": tuple(WEATHER),
        "time": tuple(TIMES),
        "season": tuple(SEASONS),
        "adv": tuple(ADVERBS),
        "sound": tuple(SOUNDS),
        "number": tuple(NUMBERS),
        "color": tuple(COLORS),
    }
